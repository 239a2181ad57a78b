"""Dirty bitmaps over QMP and NBD: exactly the written granules.

usage: bitmap_map.py SOCKET QMP

The server serves `r` (raw, 32 MiB) and `q` (qcow2, 32 MiB). For each, a
64 KiB and a 4 KiB bitmap record writes, write-zeroes and trims made over
NBD; nbdinfo --map and qemu-img map (x-dirty-bitmap) of an export offering
them show exactly those granules. Then clear/disable/enable/merge, and bad
QMP input: every error clear, the server still serving.
"""
import random
import sys

from bitmap_lib import M, QmpClient, connect, granules, nbdinfo_map, qemu_img_map, runs, bitmaps_of

sock, qmp_path = sys.argv[1], sys.argv[2]
SIZE = 32 * M
qmp = QmpClient(qmp_path, timeout=30)
qmp.negotiate()
rng = random.Random(7)

for node in ("r", "q"):
    qmp.ok("block-dirty-bitmap-add", node=node, name="b64")
    qmp.ok("block-dirty-bitmap-add", node=node, name="b4k", granularity=4096)
    qmp.ok("block-dirty-bitmap-add", node=node, name="off", disabled=True)
    h = connect(sock, node)
    written = []
    for _ in range(20):
        off = rng.randrange(0, SIZE - 200000)
        n = rng.randrange(1, 200000)
        h.pwrite(rng.randbytes(n), off)
        written.append((off, n))
    h.zero(3 * 65536, 9 * M + 123)
    written.append((9 * M + 123, 3 * 65536))
    h.trim(65536, 20 * M)
    written.append((20 * M, 65536))
    h.pwrite(b"e" * 512, SIZE - 512)  # the last granule
    written.append((SIZE - 512, 512))
    h.flush()
    h.shutdown()

    qmp.ok("nbd-server-add", device=node, name=node + "-map", bitmaps=["b64", "b4k", "off"])
    for name, gran in (("b64", 65536), ("b4k", 4096)):
        want = runs(granules(written, gran, SIZE), gran, SIZE)
        got = nbdinfo_map(sock, node + "-map", name)
        assert got == want, "%s %s nbdinfo: %r != %r" % (node, name, got[:6], want[:6])
        got = qemu_img_map(sock, node + "-map", name)
        assert got == want, "%s %s qemu-img map: %r != %r" % (node, name, got[:6], want[:6])
        info = bitmaps_of(qmp, node)[name]
        dirty = len(granules(written, gran, SIZE)) * gran
        assert info == {"name": name, "granularity": gran, "count": dirty, "recording": True,
                        "persistent": False, "busy": True}, info
    assert nbdinfo_map(sock, node + "-map", "off") == [(0, SIZE, False)], "a disabled bitmap recorded"
    # Exported bitmaps are busy: only merge may read them.
    cls, desc = qmp.error("block-dirty-bitmap-clear", node=node, name="b64")
    assert desc == "Bitmap 'b64' is currently in use by another operation and cannot be used", desc
    qmp.ok("nbd-server-remove", name=node + "-map")
    qmp.ok("block-dirty-bitmap-merge", node=node, target="off", bitmaps=["b4k"])
    assert bitmaps_of(qmp, node)["off"]["count"] == len(granules(written, 65536, SIZE)) * 65536

    qmp.ok("block-dirty-bitmap-clear", node=node, name="b64")
    assert bitmaps_of(qmp, node)["b64"]["count"] == 0
    qmp.ok("block-dirty-bitmap-disable", node=node, name="b64")
    h = connect(sock, node)
    h.pwrite(b"z" * 4096, 0)
    qmp.ok("block-dirty-bitmap-enable", node=node, name="b64")
    h.pwrite(b"z" * 4096, 2 * M)
    h.shutdown()
    info = bitmaps_of(qmp, node)["b64"]
    assert info["count"] == 65536 and info["recording"], info
    for name in ("b64", "b4k", "off"):
        qmp.ok("block-dirty-bitmap-remove", node=node, name=name)
    assert bitmaps_of(qmp, node) == {}

# Bad input: QEMU's texts, nothing changed, serving continues.
qmp.ok("block-dirty-bitmap-add", node="r", name="a")
qmp.ok("block-dirty-bitmap-add", node="q", name="big", granularity=1 << 20)
bad = [
    ("block-dirty-bitmap-add", dict(node="nope", name="x"), "Cannot find device='nope' nor node-name='nope'"),
    ("block-dirty-bitmap-add", dict(node="r", name=""), "Bitmap name cannot be empty"),
    ("block-dirty-bitmap-add", dict(node="r", name="a"), "Bitmap already exists: a"),
    ("block-dirty-bitmap-add", dict(node="r", name="x", granularity=1000), "Granularity must be power of 2 and at least 512"),
    ("block-dirty-bitmap-add", dict(node="r", name="x", granularity=256), "Granularity must be power of 2 and at least 512"),
    ("block-dirty-bitmap-add", dict(node="r", name="x", granularity=-4096), "Granularity must be power of 2 and at least 512"),
    ("block-dirty-bitmap-add", dict(node="r", name="x" * 1024), "Bitmap name too long: " + "x" * 1024),
    ("block-dirty-bitmap-add", dict(node="r", name="x", persistent="yes"), "Invalid parameter type for 'persistent', expected: boolean"),
    ("block-dirty-bitmap-add", dict(node="r"), "Parameter 'name' is missing"),
    ("block-dirty-bitmap-add", dict(node="r", name="x", bogus=1), "Parameter 'bogus' is unexpected"),
    ("block-dirty-bitmap-remove", dict(node="r", name="x"), "Dirty bitmap 'x' not found"),
    ("block-dirty-bitmap-remove", dict(node="nope", name="a"), "Node 'nope' not found"),
    ("block-dirty-bitmap-clear", dict(node="r", name="x"), "Dirty bitmap 'x' not found"),
    ("block-dirty-bitmap-enable", dict(node="q", name="a"), "Dirty bitmap 'a' not found"),
    ("block-dirty-bitmap-disable", dict(node="nope", name="a"), "Node 'nope' not found"),
    ("block-dirty-bitmap-merge", dict(node="r", target="a", bitmaps=["x"]), "Dirty bitmap 'x' not found"),
    ("block-dirty-bitmap-merge", dict(node="r", target="x", bitmaps=["a"]), "Dirty bitmap 'x' not found"),
    ("block-dirty-bitmap-merge", dict(node="r", target="a", bitmaps=[{"node": "q", "name": "nope"}]), "Dirty bitmap 'nope' not found"),
    ("block-dirty-bitmap-merge", dict(node="r", target="a", bitmaps=[7]), "Invalid parameter type for 'bitmaps[0]'"),
    ("block-dirty-bitmap-merge", dict(node="r", target="a"), "Parameter 'bitmaps' is missing"),
    ("nbd-server-add", dict(device="r", name="x", bitmaps=["nope"]), "Bitmap 'nope' is not found"),
    ("nbd-server-add", dict(device="r", name="x", bitmaps=[1]), "Invalid parameter type for 'bitmaps[0]', expected: string"),
    ("nbd-server-add", dict(device="r", name="x", writable=True, bitmaps=["a"]), "Enabled bitmap 'a' incompatible with writable export"),
]
for cmd, args, text in bad:
    cls, desc = qmp.error(cmd, **args)
    assert cls == "GenericError" and desc.startswith(text), (cmd, args, cls, desc)
# A merge takes bitmaps of this node and of others.
h = connect(sock, "r")
h.pwrite(b"a" * 4096, M)
h.shutdown()
qmp.ok("block-dirty-bitmap-add", node="q", name="qa")
h = connect(sock, "q")
h.pwrite(b"a" * 4096, 5 * M)
h.shutdown()
qmp.ok("block-dirty-bitmap-merge", node="r", target="a", bitmaps=["a", {"node": "q", "name": "qa"}])
assert bitmaps_of(qmp, "r")["a"]["count"] == 2 * 65536
qmp.ok("nbd-server-add", device="r", name="r-a", bitmaps=["a"])
assert nbdinfo_map(sock, "r-a", "a") == runs({16, 80}, 65536, SIZE), "merge across nodes"
assert bitmaps_of(qmp, "r").keys() == {"a"} and bitmaps_of(qmp, "q").keys() == {"big", "qa"}
print("bitmap_map: ok")
