"""Persistent dirty bitmaps across restarts (run once per phase).

usage: bitmap_persist.py PHASE SOCKET QMP

Disks: `vd` (qcow2, 32 MiB, bitmap `pre` added by qemu-img before the
first start) and `r` (raw, 32 MiB, bitmaps in its sidecar).
"""
import sys
import time

from bitmap_lib import M, QmpClient, connect, granules, nbdinfo_map, runs, bitmaps_of

phase, sock, qmp_path = sys.argv[1], sys.argv[2], sys.argv[3]
SIZE = 32 * M
G = 65536
for attempt in range(50):  # the monitor may come up just after the ready line
    try:
        qmp = QmpClient(qmp_path, timeout=30)
        break
    except (FileNotFoundError, ConnectionRefusedError):
        time.sleep(0.1)
qmp.negotiate()
FIRST = [(M, 4096), (7 * M + 100, 70000)]
SECOND = [(20 * M, 3 * G)]


def write(node, ranges):
    h = connect(sock, node)
    for off, n in ranges:
        h.pwrite(b"w" * n, off)
    h.flush()
    h.shutdown()


def shown(node, name, export):
    qmp.ok("nbd-server-add", device=node, name=export, bitmaps=[name])
    got = nbdinfo_map(sock, export, name)
    qmp.ok("nbd-server-remove", name=export)
    return got


if phase == "first":
    b = bitmaps_of(qmp, "vd")
    assert b == {"pre": {"name": "pre", "granularity": G, "count": 0, "recording": True,
                         "persistent": True, "busy": False}}, b
    write("vd", FIRST)
    qmp.ok("fleece-start", id="f1", devices=["vd"], bitmaps=[{"node": "vd", "name": "pre"}])
    assert nbdinfo_map(sock, "vd@f1", "pre") == runs(granules(FIRST, G, SIZE), G, SIZE)
    qmp.ok("block-dirty-bitmap-add", node="vd", name="mine", persistent=True)
    qmp.ok("block-dirty-bitmap-add", node="vd", name="temp")  # not persistent: gone after restart
    write("vd", SECOND)
    qmp.ok("block-dirty-bitmap-add", node="r", name="rb", persistent=True, granularity=4096)
    write("r", FIRST)
    # Persistent on a read-only node: refused with the reason.
    cls, desc = qmp.error("block-dirty-bitmap-add", node="ro", name="x", persistent=True)
    assert desc == "Can't make bitmap 'x' persistent in 'ro': the node is read-only", desc
    qmp.ok("block-dirty-bitmap-add", node="ro", name="x")
    qmp.ok("quit")
elif phase == "second":
    b = bitmaps_of(qmp, "vd")
    assert set(b) == {"pre", "pre@f1", "mine"}, b
    assert b["pre@f1"]["count"] == len(granules(FIRST, G, SIZE)) * G and not b["pre@f1"]["recording"], b
    assert b["mine"]["count"] == len(granules(SECOND, G, SIZE)) * G and b["mine"]["recording"], b
    assert shown("vd", "mine", "m") == runs(granules(SECOND, G, SIZE), G, SIZE)
    assert shown("r", "rb", "rr") == runs(granules(FIRST, 4096, SIZE), 4096, SIZE)
    write("vd", [(30 * M, 512)])
    write("r", [(30 * M, 512)])
    print("second: ready to be killed", flush=True)
elif phase == "third":
    for node, name in (("vd", "mine"), ("vd", "pre"), ("r", "rb")):
        b = bitmaps_of(qmp, node)[name]
        assert b.get("inconsistent") is True and not b["recording"] and b["persistent"], b
    cls, desc = qmp.error("fleece-start", id="f2", devices=["vd"], bitmaps=[{"node": "vd", "name": "mine"}])
    assert desc.startswith("Bitmap 'mine' is inconsistent and cannot be used"), desc
    cls, desc = qmp.error("block-dirty-bitmap-clear", node="vd", name="mine")
    assert desc.startswith("Bitmap 'mine' is inconsistent and cannot be used"), desc
    cls, desc = qmp.error("nbd-server-add", device="r", name="x", bitmaps=["rb"])
    assert desc.startswith("Bitmap 'rb' is inconsistent and cannot be used"), desc
    for node, name in (("vd", "mine"), ("vd", "pre"), ("r", "rb")):
        qmp.ok("block-dirty-bitmap-remove", node=node, name=name)
    assert set(bitmaps_of(qmp, "vd")) == {"pre@f1"}
    write("vd", [(0, 512)])  # still serving
    qmp.ok("quit")
print("bitmap_persist %s: ok" % phase)
