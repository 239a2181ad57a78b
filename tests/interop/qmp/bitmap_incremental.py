"""Incremental backup end to end: a full backup from fleece f1, then only
the dirty extents of fleece f2, restore = full + incremental = the disk at
f2's point in time.

usage: bitmap_incremental.py SOCKET QMP WORKDIR

The server serves `vd` (qcow2, 64 MiB, empty). The test writes a model of
the disk as it goes. Around fleece-start f2 a second writer hits its own
granules (each once) without pause: every one of them must be in exactly
one of the frozen bitmap and the new one (none in neither, none in both).
"""
import hashlib
import random
import subprocess
import sys
import threading
import time

from bitmap_lib import M, QmpClient, connect, granules, dirty_extents, bitmaps_of

sock, qmp_path, work = sys.argv[1], sys.argv[2], sys.argv[3]
SIZE = 64 * M
G = 65536
CTX = "qemu:dirty-bitmap:inc"
rng = random.Random(11)
qmp = QmpClient(qmp_path, timeout=30)
qmp.negotiate()
model = bytearray(SIZE)


def write(h, off, data):
    h.pwrite(data, off)
    model[off:off + len(data)] = data


def random_writes(h, count, lo, hi):
    done = []
    for _ in range(count):
        n = rng.randrange(1, 3 * G)
        off = rng.randrange(lo, hi - n)
        write(h, off, rng.randbytes(n))
        done.append((off, n))
    return done


def sha(data):
    return hashlib.sha256(data).hexdigest()


def nbdcopy(export, dest):
    subprocess.run(["nbdcopy", "nbd+unix:///%s?socket=%s" % (export, sock), dest],
                   check=True, timeout=60)


# The disk before any backup: data in the first 40 MiB (the writer's region,
# 48..64 MiB, stays out of the model's random writes).
h = connect(sock, "vd")
for i in range(0, 40 * M, M):
    if i % (4 * M) != 3 * M:
        write(h, i, rng.randbytes(M - G))
h.flush()

qmp.ok("block-dirty-bitmap-add", node="vd", name="inc", persistent=True)
r = qmp.ok("fleece-start", id="f1", devices=["vd"], bitmaps=[{"node": "vd", "name": "inc"}])
assert r["exports"] == ["vd@f1"], r
at_f1 = sha(model)
b = bitmaps_of(qmp, "vd")
assert b["inc"]["count"] == 0 and b["inc"]["recording"], b
assert b["inc@f1"]["frozen"] and b["inc@f1"]["busy"] and not b["inc@f1"]["recording"], b

# Writes after f1 land in the live disk only; the full backup reads f1.
w2 = random_writes(h, 30, 0, 48 * M)
h.flush()
nbdcopy("vd@f1", work + "/full.raw")
with open(work + "/full.raw", "rb") as f:
    assert sha(f.read()) == at_f1, "full backup is not the disk at f1"

# fleece-start f2 while a writer keeps going on its own granules.
writer_granules = list(range(48 * M // G, SIZE // G))
random.Random(3).shuffle(writer_granules)
written_by_writer = []
stop = threading.Event()


def writer():
    w = connect(sock, "vd")
    for g in writer_granules:
        if stop.is_set():
            break
        w.pwrite(bytes([g & 255]) * 4096, g * G + 8192)
        written_by_writer.append(g)
        time.sleep(0.001)  # spread over the point in time
    w.shutdown()


t = threading.Thread(target=writer)
t.start()
while len(written_by_writer) < 20:
    time.sleep(0.001)
r = qmp.ok("fleece-start", id="f2", devices=["vd"], bitmaps=[{"node": "vd", "name": "inc"}])
at_f2_low = sha(model[:48 * M])  # the model's region, at f2
seen_at_start = len(written_by_writer)
while len(written_by_writer) < seen_at_start + 20 and t.is_alive():
    time.sleep(0.001)
stop.set()
t.join(30)
assert not t.is_alive()

w3 = random_writes(h, 10, 0, 48 * M)  # after f2: in neither backup
h.flush()

# The incremental backup: only what inc@f2 marks, read from vd@f2.
v = connect(sock, "vd@f2", [CTX])
dirty = dirty_extents(v, CTX, SIZE)
dirty_granules = granules(dirty, G, SIZE)
frozen = {g for g in dirty_granules if g < 48 * M // G}
assert frozen == granules(w2, G, SIZE), "inc@f2 is not exactly the writes between f1 and f2"
restored = bytearray(open(work + "/full.raw", "rb").read())
copied = 0
for off, n in dirty:
    restored[off:off + n] = v.pread(n, off)
    copied += n
whole = v.pread(SIZE // 2, 0) + v.pread(SIZE // 2, SIZE // 2)
v.shutdown()
assert sha(restored) == sha(whole), "full + incremental != the disk at f2"
assert sha(restored[:48 * M]) == at_f2_low, "the restore is not the model at f2"
print("incremental: %d of %d bytes copied" % (copied, SIZE))

# Writer granules: each in exactly one of inc@f2 and inc (no write in neither, none in both).
writer_set = set(written_by_writer)
in_frozen = {g for g in dirty_granules if g >= 48 * M // G}
assert in_frozen <= writer_set, "inc@f2 has granules nobody wrote"
qmp.ok("block-dirty-bitmap-disable", node="vd", name="inc")
qmp.ok("block-dirty-bitmap-add", node="vd", name="probe", disabled=True)
qmp.ok("block-dirty-bitmap-merge", node="vd", target="probe", bitmaps=["inc"])
qmp.ok("nbd-server-add", device="vd", name="vd-probe", bitmaps=["probe"])
p = connect(sock, "vd-probe", ["qemu:dirty-bitmap:probe"])
in_live = {g for g in granules(dirty_extents(p, "qemu:dirty-bitmap:probe", SIZE), G, SIZE) if g >= 48 * M // G}
p.shutdown()
qmp.ok("nbd-server-remove", name="vd-probe")
assert not (in_frozen & in_live), "a write in both bitmaps"
assert in_frozen | in_live == writer_set, "a write in neither bitmap: %d" % len(writer_set - in_frozen - in_live)
assert in_frozen and in_live, "the writer did not straddle the point in time"
qmp.ok("block-dirty-bitmap-enable", node="vd", name="inc")
qmp.ok("block-dirty-bitmap-remove", node="vd", name="probe")

# The backup of f2 "failed": inc@f2 merges back into inc, nothing lost.
count_before = bitmaps_of(qmp, "vd")["inc"]["count"]
cls, desc = qmp.error("block-dirty-bitmap-remove", node="vd", name="inc@f2")
assert "in use by another operation" in desc, desc
cls, desc = qmp.error("block-dirty-bitmap-clear", node="vd", name="inc@f1")
assert "in use" in desc or "readonly" in desc, desc
qmp.ok("block-dirty-bitmap-merge", node="vd", target="inc", bitmaps=["inc@f2"])
info = bitmaps_of(qmp, "vd")
want = granules(w2, G, SIZE) | granules(w3, G, SIZE) | writer_set
assert info["inc"]["count"] == len(want) * G, (info["inc"]["count"], len(want) * G, count_before)
cls, desc = qmp.error("fleece-start", id="f3", devices=["vd"], bitmaps=[{"node": "vd", "name": "inc@f2"}])
assert desc == "Dirty bitmap 'inc@f2' not found", desc
cls, desc = qmp.error("fleece-start", id="f3", devices=["vd"], bitmaps=[{"node": "vx", "name": "inc"}])
assert "not one of the fleece's 'devices'" in desc, desc
cls, desc = qmp.error("fleece-start", id="f3", devices=["vd"], bitmaps=[{"node": "vd"}])
assert desc == "Parameter 'bitmaps[0].name' is missing", desc
cls, desc = qmp.error("fleece-start", id="f3", devices=["vd"], bitmaps=["inc"])
assert desc == "Invalid parameter type for 'bitmaps[0]', expected: object", desc
cls, desc = qmp.error("fleece-start", id="f1", devices=["vd"], bitmaps=[{"node": "vd", "name": "inc"}])
assert "already exists" in desc, desc
assert bitmaps_of(qmp, "vd")["inc"]["count"] == len(want) * G, "a refused fleece-start changed the bitmap"
assert [f["id"] for f in qmp.ok("query-fleeces")] == ["f1", "f2"]

qmp.ok("fleece-stop", id="f1")
qmp.ok("fleece-stop", id="f2")
qmp.ok("block-dirty-bitmap-remove", node="vd", name="inc@f1")
qmp.ok("block-dirty-bitmap-remove", node="vd", name="inc@f2")
assert set(bitmaps_of(qmp, "vd")) == {"inc"}
h.shutdown()
print("bitmap_incremental: ok")
