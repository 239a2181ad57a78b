#!/usr/bin/python3
"""report.py ROWS.tsv: the markdown tables of bench/run.sh.

Rows: test, server, unit, value, server CPU seconds, work (GiB or requests);
and `rss, server, KiB`."""
import sys
from collections import OrderedDict

tests = OrderedDict()
rss = {}
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    if f[0] == "rss":
        rss[f[1]] = int(f[2])
        continue
    test, server, unit, value, cpu, work = f[0], f[1], f[2], float(f[3]), float(f[4]), float(f[5])
    # CPU per GiB for throughput rows, per request (in µs) for IOPS rows.
    per = cpu / work if unit != "IOPS" else cpu / work * 1e6
    tests.setdefault(test, {})[server] = (unit, value, per)

print("| test | server | result | server CPU | result fleece/server | CPU fleece/server |")
print("|---|---|---|---|---|---|")
for test, by in tests.items():
    base = by.get("fleece")
    for server, (unit, value, per) in by.items():
        cpu_unit = "s/GiB" if unit != "IOPS" else "µs/req"
        if base and server != "fleece":
            r1 = f"{base[1] / value:.2f}" if value else "-"
            r2 = f"{base[2] / per:.2f}" if per else "-"
        else:
            r1 = r2 = ""
        print(f"| {test} | {server} | {value:,.0f} {unit} | {per:.3f} {cpu_unit} | {r1} | {r2} |")
print()
print("| server | peak RSS (VmHWM) |")
print("|---|---|")
for server, kib in rss.items():
    print(f"| {server} | {kib / 1024:.1f} MiB |")
