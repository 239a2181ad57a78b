"""Helpers for the dirty-bitmap interop tests (test_bitmap_*.sh)."""
import json
import os
import subprocess
import sys

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp_client import QmpClient  # noqa: E402,F401

M = 1 << 20


def connect(sock, name, contexts=()):
    h = nbd.NBD()
    for c in contexts:
        h.add_meta_context(c)
    h.connect_uri("nbd+unix:///%s?socket=%s" % (name, sock))
    return h


def granules(ranges, gran, size):
    """The set of granule indexes that byte ranges [(off, len)] touch."""
    out = set()
    for off, n in ranges:
        if n == 0:
            continue
        out.update(range(off // gran, min((off + n - 1) // gran, (size - 1) // gran) + 1))
    return out


def runs(dirty, gran, size):
    """[(offset, length, dirty)] of a granule set, merged, clamped to size."""
    out = []
    g = 0
    total = (size + gran - 1) // gran
    while g < total:
        d = g in dirty
        e = g
        while e < total and (e in dirty) == d:
            e += 1
        out.append((g * gran, min(e * gran, size) - g * gran, d))
        g = e
    return out


def nbdinfo_map(sock, export, bitmap):
    """nbdinfo --map=qemu:dirty-bitmap:BITMAP as [(offset, length, dirty)], merged."""
    r = subprocess.run(["nbdinfo", "--map=qemu:dirty-bitmap:" + bitmap,
                        "nbd+unix:///%s?socket=%s" % (export, sock)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = []
    for line in r.stdout.splitlines():
        off, n, flags = (int(x) for x in line.split()[:3])
        d = bool(flags & 1)
        if out and out[-1][2] == d and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + n, d)
        else:
            out.append((off, n, d))
    return out


def qemu_img_map(sock, export, bitmap):
    """qemu-img map with x-dirty-bitmap: QEMU reports dirty areas as data: false."""
    opts = ("driver=nbd,server.type=unix,server.path=%s,export=%s,x-dirty-bitmap=qemu:dirty-bitmap:%s"
            % (sock, export, bitmap))
    r = subprocess.run(["qemu-img", "map", "--output=json", "--image-opts", opts],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = []
    for e in json.loads(r.stdout):
        d = not e["data"]
        if out and out[-1][2] == d:
            out[-1] = (out[-1][0], out[-1][1] + e["length"], d)
        else:
            out.append((e["start"], e["length"], d))
    return out


def dirty_extents(h, context, size):
    """[(offset, length)] of the dirty runs of a libnbd handle's context."""
    out = []
    off = 0
    while off < size:
        got = []

        def cb(meta, offset, entries, err):
            if meta == context:
                got.extend(entries)
            return 0
        h.block_status(min(size - off, 1 << 30), off, cb)
        assert got, "no extents for " + context
        for i in range(0, len(got), 2):
            n = min(got[i], size - off)
            if got[i + 1] & 1:
                if out and out[-1][0] + out[-1][1] == off:
                    out[-1] = (out[-1][0], out[-1][1] + n)
                else:
                    out.append((off, n))
            off += n
            if off >= size:
                break
    return out


def bitmaps_of(qmp, node):
    """query-block's dirty-bitmaps of a node, by name."""
    for b in qmp.ok("query-block"):
        if b["device"] == node:
            return {x["name"]: x for x in b["inserted"].get("dirty-bitmaps", [])}
    raise AssertionError("node %s not in query-block" % node)
