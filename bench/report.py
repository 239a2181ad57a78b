#!/usr/bin/python3
"""report.py ROWS.tsv: the markdown tables of bench/run.sh and bench/tls.sh.

Rows: test, server, unit, value, server CPU seconds, work (GiB or requests),
and from tls.sh a seventh field, the mode (plain or tls); and
`rss, server, KiB`. Rows without a mode give run.sh's table (one row per test
and server); rows with a mode give the TLS table (plaintext and TLS side by
side). A test, server and mode measured in several rounds is reported by the
median of its results and the median of its CPU costs, with the range."""
import statistics
import sys
from collections import OrderedDict


def cpu_per(unit, cpu, work):
    """CPU per GiB for throughput rows, per request (in µs) for IOPS rows."""
    return cpu / work if unit != "IOPS" else cpu / work * 1e6


def cpu_unit(unit):
    return "s/GiB" if unit != "IOPS" else "µs/req"


def ratio(a, b):
    return f"{a / b:.2f}" if b else "-"


def read_rows(path):
    """{(test, mode): {server: (unit, [values], [cpu per])}} and rss."""
    tests = OrderedDict()
    rss = {}
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if f[0] == "rss":
            rss[f[1]] = int(f[2])
            continue
        test, server, unit, value, cpu, work = f[0], f[1], f[2], float(f[3]), float(f[4]), float(f[5])
        mode = f[6] if len(f) > 6 else None
        entry = tests.setdefault((test, mode), {}).setdefault(server, (unit, [], []))
        entry[1].append(value)
        entry[2].append(cpu_per(unit, cpu, work))
    return tests, rss


def plain_table(tests):
    print("| test | server | result | server CPU | result fleece/server | CPU fleece/server |")
    print("|---|---|---|---|---|---|")
    for (test, _), by in tests.items():
        med = {s: (u, statistics.median(v), statistics.median(c)) for s, (u, v, c) in by.items()}
        base = med.get("fleece")
        for server, (unit, value, per) in med.items():
            if base and server != "fleece":
                r1, r2 = ratio(base[1], value), ratio(base[2], per)
            else:
                r1 = r2 = ""
            print(f"| {test} | {server} | {value:,.0f} {unit} | {per:.3f} {cpu_unit(unit)} | {r1} | {r2} |")


def cell(values, fmt):
    """The median, and the range when there were several rounds."""
    text = fmt(statistics.median(values))
    return text if len(values) < 2 else f"{text} ({fmt(min(values))}–{fmt(max(values))})"


def tls_table(tests):
    print("| test | server | plaintext | TLS | TLS/plaintext | server CPU plaintext | server CPU TLS "
          "| CPU TLS/plaintext | TLS fleece/server | TLS CPU fleece/server |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    names = OrderedDict((test, None) for test, _ in tests)
    for test in names:
        plain, tls = tests.get((test, "plain"), {}), tests.get((test, "tls"), {})
        med = lambda by, s, i: statistics.median(by[s][i]) if s in by else 0
        for server in OrderedDict.fromkeys(list(plain) + list(tls)):
            unit = (plain.get(server) or tls.get(server))[0]
            num = lambda x: f"{x:,.0f}"
            per = lambda x: f"{x:.3f}"
            r = [cell(plain[server][1], num) if server in plain else "-",
                 cell(tls[server][1], num) if server in tls else "-",
                 ratio(med(tls, server, 1), med(plain, server, 1)),
                 cell(plain[server][2], per) if server in plain else "-",
                 cell(tls[server][2], per) if server in tls else "-",
                 ratio(med(tls, server, 2), med(plain, server, 2))]
            if server != "fleece" and "fleece" in tls and server in tls:
                r += [ratio(med(tls, "fleece", 1), med(tls, server, 1)),
                      ratio(med(tls, "fleece", 2), med(tls, server, 2))]
            else:
                r += ["", ""]
            print(f"| {test} ({unit}; CPU {cpu_unit(unit)}) | {server} | " + " | ".join(r) + " |")


def main():
    tests, rss = read_rows(sys.argv[1])
    if any(mode for _, mode in tests):
        tls_table(tests)
    else:
        plain_table(tests)
    print()
    print("| server | peak RSS (VmHWM) |")
    print("|---|---|")
    for server, kib in rss.items():
        print(f"| {server} | {kib / 1024:.1f} MiB |")


main()
