"""Fleeces at three points in time under a running writer, each checked exactly.

usage: fleece_points.py SOCKET QMP STORE_DIR

The server exports `d` (the main disk) and `ga`, `gb` (a disk group).
Writers (4 threads, one connection each, disjoint blocks so that the writes
to one block are ordered) stamp every 4 KiB write with (seq, block) and fill
it from seq; each write's issue and ack times are logged. While they run, the
script starts fleeces p1..p3 of `d` and g1..g3 of [ga, gb], reads every
frozen view, and checks for each fleece:
  * every block is either the original or exactly one logged write's payload;
  * per block, every write acked before fleece-start was sent is in the view
    and every write issued after its reply is not;
  * one instant: the latest issue time of the writes in the view is before
    the earliest ack time of the writes left out (over all blocks and all
    disks of the fleece);
  * group: a writer stamps seq n on ga then on gb; gb is never newer than ga.
Then, while the fleeces live, qemu-img reads every store through its backing
chain (equals the view) and checks it; fleece-stop deletes the stores; the
live disk equals the model of all writes.
"""
import itertools
import os
import random
import struct
import subprocess
import sys
import threading
import time

import nbd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "qmp"))
from qmp_client import QmpClient  # noqa: E402

BS = 4096
MAGIC = 0x464C454543455354  # "FLEECEST"
NT = 4

sock, qmp_path, store_dir = sys.argv[1], sys.argv[2], sys.argv[3]


def connect(name):
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///%s?socket=%s" % (name, sock))
    return h


def read_all(name):
    h = connect(name)
    size = h.get_size()
    out = bytearray()
    for off in range(0, size, 1 << 20):
        out += h.pread(min(1 << 20, size - off), off)
    h.shutdown()
    return bytes(out)


def payload(seq, block):
    head = struct.pack("<QQQ", MAGIC, seq, block)
    return head + random.Random(seq).randbytes(BS - len(head))


def fail(msg):
    print("FAIL:", msg, file=sys.stderr)
    sys.exit(1)


orig = {n: read_all(n) for n in ("d", "ga", "gb")}
blocks = {n: len(orig[n]) // BS for n in orig}
log = {n: [] for n in orig}  # disk -> [(seq, block, t_issue, t_ack)]
log_lock = threading.Lock()
seqs = itertools.count(1)
stop = threading.Event()


def writer(tid):
    h = connect("d")
    rng = random.Random(100 + tid)
    mine = [b for b in range(blocks["d"]) if b % NT == tid]
    done = []
    while not stop.is_set():
        b = rng.choice(mine)
        s = next(seqs)
        t0 = time.monotonic_ns()
        h.pwrite(payload(s, b), b * BS)
        done.append((s, b, t0, time.monotonic_ns()))
    h.shutdown()
    with log_lock:
        log["d"] += done


def group_writer():
    ha, hb = connect("ga"), connect("gb")
    done_a, done_b = [], []
    n = 0
    while not stop.is_set():
        n += 1
        b = n % blocks["ga"]
        s = next(seqs)
        t0 = time.monotonic_ns()
        ha.pwrite(payload(s, b), b * BS)
        t1 = time.monotonic_ns()
        hb.pwrite(payload(s, b), b * BS)
        t2 = time.monotonic_ns()
        done_a.append((s, b, t0, t1))
        done_b.append((s, b, t1, t2))
    ha.shutdown()
    hb.shutdown()
    with log_lock:
        log["ga"] += done_a
        log["gb"] += done_b


def view_seqs(disk, data):
    """Per block: 0 (original) or the seq whose exact payload it holds."""
    out = []
    for b in range(blocks[disk]):
        c = data[b * BS:(b + 1) * BS]
        if c == orig[disk][b * BS:(b + 1) * BS]:
            out.append(0)
            continue
        magic, s, blk = struct.unpack_from("<QQQ", c)
        if magic != MAGIC or blk != b or c != payload(s, b):
            fail("%s block %d holds neither the original nor one whole write" % (disk, b))
        out.append(s)
    return out


def check_point(fid, disks, t_send, t_reply, views):
    latest_in, earliest_out = 0, None
    seq_of = {}
    for disk in disks:
        by_block = {}
        for e in log[disk]:
            by_block.setdefault(e[1], []).append(e)
        got = view_seqs(disk, views[disk])
        seq_of[disk] = got
        for b, s in enumerate(got):
            writes = sorted(by_block.get(b, []))
            if s and not any(w[0] == s for w in writes):
                fail("%s@%s block %d: seq %d was never written there" % (disk, fid, b, s))
            for w in writes:
                if w[0] <= s:
                    latest_in = max(latest_in, w[2])
                    if w[2] > t_reply:
                        fail("%s@%s block %d: write %d issued after fleece-start returned is in the view"
                             % (disk, fid, b, w[0]))
                else:
                    if w[3] < t_send:
                        fail("%s@%s block %d: write %d acked before fleece-start is missing"
                             % (disk, fid, b, w[0]))
                    earliest_out = w[3] if earliest_out is None else min(earliest_out, w[3])
    if earliest_out is not None and latest_in >= earliest_out:
        fail("fleece %s is not one point in time (a write in the view was issued after one "
             "left out was acked)" % fid)
    return seq_of


qmp = QmpClient(qmp_path, timeout=30)
qmp.negotiate()
threads = [threading.Thread(target=writer, args=(t,)) for t in range(NT)]
threads.append(threading.Thread(target=group_writer))
for t in threads:
    t.start()

points = []  # (id, disks, t_send, t_reply)
try:
    for k in (1, 2, 3):
        time.sleep(0.4)
        for fid, disks in (("p%d" % k, ["d"]), ("g%d" % k, ["ga", "gb"])):
            t_send = time.monotonic_ns()
            r = qmp.ok("fleece-start", id=fid, devices=disks)
            t_reply = time.monotonic_ns()
            assert r["exports"] == ["%s@%s" % (d, fid) for d in disks], r
            assert r["write-pause-us"] >= 0, r
            points.append((fid, disks, t_send, t_reply))
            print("fleece %s: writes paused %d us" % (fid, r["write-pause-us"]), file=sys.stderr)
    time.sleep(0.3)
    # Every view is read while the writers go on.
    views = {fid: {d: read_all("%s@%s" % (d, fid)) for d in disks} for fid, disks, _, _ in points}
finally:
    stop.set()
    for t in threads:
        t.join()

print("writes: d %d, group %d" % (len(log["d"]), len(log["ga"])), file=sys.stderr)
for fid, disks, t_send, t_reply in points:
    seq_of = check_point(fid, disks, t_send, t_reply, views[fid])
    if fid.startswith("g"):
        a, b = max(seq_of["ga"]), max(seq_of["gb"])
        if b > a:
            fail("group %s: gb holds seq %d, newer than ga's %d" % (fid, b, a))
        print("group %s: ga seq %d, gb seq %d" % (fid, a, b), file=sys.stderr)
    elif len(set(seq_of["d"])) < 2:
        fail("fleece %s: no write reached the view; the test proves nothing" % fid)

# The stores, read by qemu-img through their backing chains, are the views,
# at a quiescent moment: a flush of the disk writes the stores' metadata out.
for disk in orig:
    h = connect(disk)
    h.flush()
    h.shutdown()
fleeces = qmp.ok("query-fleeces")
assert sorted(f["id"] for f in fleeces) == sorted(p[0] for p in points), fleeces
stores = []
for f in fleeces:
    for dev in f["devices"]:
        assert dev["broken"] is False, dev
        assert dev["read-bytes"] >= len(orig[dev["device"]]), dev
        assert os.path.dirname(dev["store"]) == store_dir, dev
        stores.append(dev["store"])
        out = os.path.join(store_dir, "..", "conv-%s-%s.raw" % (f["id"], dev["device"]))
        subprocess.run(["qemu-img", "check", "-U", dev["store"]], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", dev["store"], out],
                       check=True)
        with open(out, "rb") as fh:
            if fh.read() != views[f["id"]][dev["device"]]:
                fail("qemu-img convert of %s differs from the view %s" % (dev["store"], dev["export"]))
        os.unlink(out)
    if f["id"] == "p1":
        d = f["devices"][0]
        assert d["preserved-bytes"] > 0 and d["store-bytes"] > 0, d
print("qemu-img: %d stores equal their views" % len(stores), file=sys.stderr)

for fid, _, _, _ in points:
    qmp.ok("fleece-stop", id=fid)
left = [s for s in stores if os.path.exists(s)]
if left:
    fail("stores left after fleece-stop: %s" % left)
assert qmp.ok("query-fleeces") == []

# The live disks hold exactly the writes.
for disk in ("d", "ga", "gb"):
    model = bytearray(orig[disk])
    for s, b, _, _ in sorted(log[disk]):
        model[b * BS:(b + 1) * BS] = payload(s, b)
    if read_all(disk) != bytes(model):
        fail("live disk %s differs from the model of its writes" % disk)
print("fleece_points: ok", file=sys.stderr)
