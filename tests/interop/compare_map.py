#!/usr/bin/python3
"""compare_map.py NBDINFO_MAP_JSON QEMU_IMG_MAP_JSON

Checks that base:allocation (from `nbdinfo --map --json`) describes the same
data/zero runs as `qemu-img map --output=json` of the file itself."""
import json
import sys


def runs(items):
    """Merge adjacent items with equal (data, zero) into (start, end, data, zero)."""
    out = []
    for start, length, data, zero in items:
        if out and out[-1][1] == start and out[-1][2:] == (data, zero):
            out[-1] = (out[-1][0], start + length, data, zero)
        else:
            out.append((start, start + length, data, zero))
    return out


nbd = json.load(open(sys.argv[1]))
qemu = json.load(open(sys.argv[2]))
# NBD_STATE_HOLE = 1, NBD_STATE_ZERO = 2
a = runs((e["offset"], e["length"], not (e["type"] & 1), bool(e["type"] & 2)) for e in nbd)
b = runs((e["start"], e["length"], e["data"], e["zero"]) for e in qemu)
if a != b:
    print("base:allocation differs from qemu-img map")
    print(" nbd :", a)
    print(" file:", b)
    sys.exit(1)
print(f"map ok: {len(a)} runs")
