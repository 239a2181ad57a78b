"""Fleecing a large disk (bench/fleece_scale.sh): what a guest feels while
fleece starts and stops fleeces, and what a frozen view costs, beside
qemu-storage-daemon's copy-before-write + snapshot-access graph.

argv: FLEECE WORK SIZE DATA_MIB. Prints a markdown table."""
import json, os, subprocess, sys, time

FLEECE, WORK, SIZE, DATA_MIB = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
DISK, SOCK, QMP = f"{WORK}/disk.img", f"{WORK}/s", f"{WORK}/q"
DATA_AT = 2 << 30  # DATA_MIB of data here, the rest of the disk a hole
rows = []

# The guest: 4 KiB writes one after another to scattered units of the data
# region (each first write copies 4 KiB of data aside), until told to stop;
# prints its slowest write in ms.
GUEST = r"""
import nbd, os, sys, time
h = nbd.NBD(); h.connect_uri("nbd+unix:///d?socket=" + sys.argv[1])
units, worst, n = int(sys.argv[3]), 0.0, 0
while not os.path.exists(sys.argv[2]):
    t = time.monotonic()
    h.pwrite(b"g" * 4096, (2 << 30) + (n * 7919 % units) * 4096)
    worst, n = max(worst, time.monotonic() - t), n + 1
print(worst * 1000)
"""


def ctl(*args):
    out = subprocess.run([FLEECE, "ctl", "--qmp", QMP, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout or "null")


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024


def with_guest(action, settle=0.4):
    """Runs action() while the guest writes; returns (action's result, its
    duration in ms, the guest's slowest write in ms)."""
    stop = f"{WORK}/guest.stop"
    if os.path.exists(stop):
        os.unlink(stop)
    g = subprocess.Popen(["/usr/bin/python3", "-c", GUEST, SOCK, stop, str(DATA_MIB * 256)],
                         stdout=subprocess.PIPE, text=True)
    time.sleep(settle)
    t = time.monotonic()
    result = action()
    ms = (time.monotonic() - t) * 1000
    time.sleep(0.2)
    open(stop, "w").close()
    worst = float(g.communicate(timeout=60)[0])
    return result, ms, worst


def map_seconds(uri):
    t = time.monotonic()
    subprocess.run(["nbdinfo", "--map", uri], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t


subprocess.run(["truncate", "-s", SIZE, DISK], check=True)
subprocess.run(f"head -c {DATA_MIB}M /dev/urandom | dd of={DISK} bs=1M seek={DATA_AT >> 20} "
               "conv=notrunc status=none", shell=True, check=True)

# ---------------------------------------------------------------- fleece
srv = subprocess.Popen([FLEECE, "serve", "--disk", f"d={DISK}", "--listen", f"unix:{SOCK}",
                        "--qmp", f"unix:{QMP}", "--store-dir", WORK, "--log-level", "warn"],
                       stdout=subprocess.PIPE, stderr=open(f"{WORK}/fleece.err", "w"), text=True)
assert srv.stdout.readline().strip() == "fleece: ready"
rss0 = rss_mib(srv.pid)
out, ms, worst = with_guest(lambda: ctl("fleece-start", "id=p1", 'devices:=["d"]'))
rows.append(("fleece-start: command, ms", ms))
rows.append(("fleece-start: write pause, µs", out["write-pause-us"]))
rows.append(("fleece-start: guest's slowest 4k write, ms", worst))
rss1 = rss_mib(srv.pid)
with_guest(lambda: time.sleep(3))  # copies into p1's store
ctl("fleece-start", "id=p2", 'devices:=["d"]')
with_guest(lambda: time.sleep(1))
ctl("fleece-start", "id=p3", 'devices:=["d"]')
rss3 = rss_mib(srv.pid)
store = ctl("query-fleeces")[0]["devices"][0]["preserved-bytes"] >> 20
_, ms, worst = with_guest(lambda: ctl("fleece-stop", "id=p1"))
rows.append((f"fleece-stop of the oldest of 3 ({store} MiB preserved): command, ms", ms))
rows.append(("fleece-stop: guest's slowest 4k write, ms", worst))
ctl("fleece-stop", "id=p2")
ctl("fleece-stop", "id=p3")
ctl("fleece-start", "id=v", 'devices:=["d"]')
fleece_map = map_seconds(f"nbd+unix:///d@v?socket={SOCK}")
ctl("fleece-stop", "id=v")
srv.terminate()
srv.wait(timeout=30)

# ---------------------------------------------------------------- qsd
def qsd(cbw):
    graph = [f"--blockdev", f"driver=file,node-name=src,filename={DISK}"]
    if cbw:
        tmp = f"{WORK}/tmp.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536",
                        "-b", DISK, "-F", "raw", tmp], check=True)
        graph += ["--blockdev", f"driver=qcow2,node-name=tmp,file.driver=file,file.filename={tmp},backing=src",
                  "--blockdev", "driver=copy-before-write,node-name=cbw,file=src,target=tmp",
                  "--blockdev", "driver=snapshot-access,node-name=acc,file=cbw",
                  "--export", "type=nbd,id=e0,node-name=cbw,name=d,writable=on",
                  "--export", "type=nbd,id=e1,node-name=acc,name=snap"]
    else:
        graph += ["--export", "type=nbd,id=e0,node-name=src,name=d,writable=on"]
    if os.path.exists(SOCK):
        os.unlink(SOCK)
    p = subprocess.Popen(["qemu-storage-daemon", "--nbd-server", f"addr.type=unix,addr.path={SOCK}", *graph],
                         stderr=open(f"{WORK}/qsd.err", "w"))
    for _ in range(100):
        if os.path.exists(SOCK):
            break
        time.sleep(0.1)
    time.sleep(0.3)
    return p


q = qsd(False)
qrss0 = rss_mib(q.pid)
q.terminate(); q.wait(timeout=30)
q = qsd(True)
qrss1 = rss_mib(q.pid)
qsd_map = map_seconds(f"nbd+unix:///snap?socket={SOCK}")
q.terminate(); q.wait(timeout=30)

print(f"| test | fleece | qsd | fleece/qsd |")
print("|---|---|---|---|")
for name, v in rows:
    print(f"| {name} | {v:,.0f} | | |")
print(f"| nbdinfo --map of a fresh frozen view, s | {fleece_map:.2f} | {qsd_map:.2f} | {fleece_map / qsd_map:.2f} |")
print(f"| RSS for one point in time (fleece-start / the cbw graph), MiB | {rss1 - rss0:.1f} | {qrss1 - qrss0:.1f} | {(rss1 - rss0) / max(qrss1 - qrss0, 0.1):.2f} |")
print(f"| RSS for three points in time, MiB (fleece) | {rss3 - rss0:.1f} | | |")
