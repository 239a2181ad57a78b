#!/bin/bash
# Dirty bitmaps, in one run: what an active bitmap costs 4k random writes,
# and an incremental backup of 1% changed data against a full backup.
#
#   bench/bitmap.sh             4 GiB image, 10 s fio runs, 5 A/B rounds (~4 min)
#   IMAGE_MIB=1024 bench/bitmap.sh   another image size
#   QUICK=1 bench/bitmap.sh     256 MiB image, 3 s runs, 2 rounds (~30 s)
#   FLEECE=path bench/bitmap.sh use this binary instead of building build-bench
#   ROUNDS=N                    A/B rounds
#
# The disk: a raw image of random data, no holes, served by fleece as export
# d (cache=writeback), on tmpfs (/dev/shm when it has room): no writeback of
# dirty pages lands in some rounds and not others, so what is left between A
# and B is the server's own cost. Backups are written to $WORK (/tmp).
# Part 1, bitmap cost: fio's nbd engine, 4k random writes, iodepth 32, one
# connection, time-based; each round runs them with no bitmap (A) and with one
# enabled bitmap (B: block-dirty-bitmap-add, 64 KiB granularity, a fresh one
# per round), A and B next to each other in ABBA order, so the load of the
# shared machine falls on both; the result is the median of the per-round
# ratios B/A, with their range.
# Part 2, incremental vs full: bitmap b, fleece-start f1 with it; full backup
# = nbdcopy of d@f1 to a file; then 1% of the disk written in random 64 KiB
# chunks (fio, no chunk twice), fleece-start f2 with b; incremental backup =
# bench/incremental.cpp (a libnbd client built here) copying only the dirty
# extents that qemu:dirty-bitmap:b on d@f2 lists. Each is timed (wall clock,
# process start included) three times, medians compared. The restore (full
# backup + the incremental's extents) must equal d@f2 (sha256), the full
# backup must equal the disk before f1, and the incremental must copy exactly
# the chunks written.
# The table goes to stdout, progress to stderr.
set -euo pipefail

. "$(dirname "$0")/preamble.sh"
bench_sizes 256 3 4096 10
if [[ -n $QUICK ]]; then ROUNDS=${ROUNDS:-2}; else ROUNDS=${ROUNDS:-5}; fi
COPIES=3
GRAN=65536

bench_work
find_fleece
echo "building the incremental backup client" >&2
INCREMENTAL=$WORK/incremental
g++ -std=c++20 -O2 -o "$INCREMENTAL" "$HERE/incremental.cpp" $(pkg-config --cflags --libs libnbd)

IMG=$WORK/disk.img
if [[ -d /dev/shm && -w /dev/shm ]] && (($(df -k --output=avail /dev/shm | tail -1) > 2 * (SIZE_MIB << 10))); then
  IMG=$(mktemp /dev/shm/fleece-bench-disk.XXXXXX)
  trap '[[ -n $SRV_PID ]] && kill -KILL $SRV_PID 2>/dev/null; rm -rf "$WORK" "$IMG"' EXIT
fi
SIZE=$((SIZE_MIB << 20)) ROWS=$WORK/rows.tsv SOCK=$WORK/s
: >"$ROWS"
echo "making a $SIZE_MIB MiB image of random data" >&2
head -c "$SIZE" /dev/urandom >"$IMG"
LOAD=$(uptime | sed 's/.*load average: *//')

mkdir -p "$WORK/stores"
FLEECE_ARGS="--store-dir $WORK/stores" start_server fleece "$IMG" "$SOCK"
ctl() { "$FLEECE" ctl --qmp "$WORK/fleece.qmp" "$@" >/dev/null; }
uri() { echo "nbd+unix:///$1?socket=$SOCK"; }
# wall CMD...: runs CMD (its stdout to $WORK/wall.out); prints seconds.
# bash's own clock: a `date` fork around the command would add its own
# start-up (1-2 ms here) to what is timed.
wall() {
  local t0 t1
  t0=$EPOCHREALTIME
  "$@" >"$WORK/wall.out"
  t1=$EPOCHREALTIME
  calc "$t1 - $t0"
}

# randwrite: 4k random writes on d; prints "IOPS requests".
randwrite() {
  fio --ioengine=nbd --uri="$(uri d)" --size="$SIZE" --bs=4k --iodepth=32 --rw=randwrite --time_based \
    --runtime="$RUNTIME" --ramp_time=1 --output-format=json --output="$WORK/fio.json" --name=w >/dev/null
  /usr/bin/python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; assert j["error"]==0
print(j["write"]["iops"], j["write"]["total_ios"])' "$WORK/fio.json"
}
no_bitmap() { measure "no bitmap" "round $1" IOPS randwrite; }
with_bitmap() {
  ctl block-dirty-bitmap-add node=d name=cost granularity=$GRAN
  measure "bitmap" "round $1" IOPS randwrite
  ctl block-dirty-bitmap-remove node=d name=cost
}

cat "$IMG" >/dev/null
sync  # no writeback of the fresh image during the first rounds
RUNTIME=1 randwrite >/dev/null  # warm-up, not counted
echo "== part 1: 4k randwrite qd32, no bitmap vs one enabled bitmap, $ROUNDS rounds" >&2
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then no_bitmap $r; with_bitmap $r; else with_bitmap $r; no_bitmap $r; fi
done

echo "== part 2: full backup vs incremental of 1% changed data" >&2
sha_of() { nbdcopy "$(uri "$1")" - | sha256sum | cut -d' ' -f1; }
at_f1=$(sha_of d)
ctl block-dirty-bitmap-add node=d name=b granularity=$GRAN
ctl fleece-start id=f1 devices:='["d"]' bitmaps:='[{"node":"d","name":"b"}]'
nbdcopy "$(uri d@f1)" null:  # warm-up
full=()
for ((i = 0; i < COPIES; i++)); do
  rm -f "$WORK/full.raw"
  full+=("$(wall nbdcopy "$(uri d@f1)" "$WORK/full.raw")")
done
[[ $(sha256sum <"$WORK/full.raw" | cut -d' ' -f1) == "$at_f1" ]] || { echo "full backup != disk at f1" >&2; exit 1; }
CHUNKS=$(((SIZE / 100 + 65535) / 65536))
fio --ioengine=nbd --uri="$(uri d)" --size="$SIZE" --bs=64k --iodepth=8 --rw=randwrite \
  --io_size=$((CHUNKS * 65536)) --name=change --output=/dev/null >/dev/null
ctl fleece-start id=f2 devices:='["d"]' bitmaps:='[{"node":"d","name":"b"}]'
inc=()
for ((i = 0; i < COPIES; i++)); do
  rm -f "$WORK/inc.raw"
  inc+=("$(wall "$INCREMENTAL" "$(uri d@f2)" b "$WORK/inc.raw" "$WORK/inc.extents")")
done
read -r inc_bytes inc_extents <"$WORK/wall.out"
((inc_bytes == CHUNKS * 65536)) || { echo "incremental copied $inc_bytes bytes, $((CHUNKS * 65536)) written" >&2; exit 1; }
at_f2=$(sha_of d@f2)
[[ $at_f2 != "$at_f1" ]] || { echo "the writes did not change the disk" >&2; exit 1; }
restored=$(/usr/bin/python3 - "$WORK/full.raw" "$WORK/inc.raw" "$WORK/inc.extents" <<'PYEOF'
import hashlib, sys
disk = bytearray(open(sys.argv[1], "rb").read())
with open(sys.argv[2], "rb") as inc:
    for line in open(sys.argv[3]):
        off, n = map(int, line.split())
        inc.seek(off)
        disk[off:off + n] = inc.read(n)
print(hashlib.sha256(disk).hexdigest())
PYEOF
)
[[ $restored == "$at_f2" ]] || { echo "restore (full + incremental) != disk at f2" >&2; exit 1; }
echo "  restore = d@f2 ($at_f2)" >&2
stop_server

echo
echo "fleece $FLEECE (tree $(git -C "$SRC" describe --always --dirty 2>/dev/null || echo '?')), image ${SIZE_MIB} MiB in $(dirname "$IMG") ($(df --output=fstype "$IMG" | tail -1))," \
  "fio runs ${RUNTIME} s, $ROUNDS rounds, $(nproc) cores, $(date -u +%Y-%m-%d), load at start: $LOAD"
echo
/usr/bin/python3 - "$ROWS" "$SIZE" "$inc_bytes" "$inc_extents" "${full[*]}" "${inc[*]}" <<'PYEOF'
import statistics as st
import sys
rows, size, inc_bytes, inc_extents = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
full, inc = [float(x) for x in sys.argv[5].split()], [float(x) for x in sys.argv[6].split()]
r = {}
for line in open(rows):
    rnd, test, _, iops, cpu, reqs = line.rstrip("\n").split("\t")[:6]
    r[(test, rnd)] = (float(iops), float(cpu) / float(reqs) * 1e6)
rounds = sorted({k[1] for k in r}, key=lambda s: int(s.split()[1]))
print("| round | IOPS no bitmap | IOPS bitmap | bitmap/no bitmap | server CPU µs/req no bitmap | bitmap |")
print("|---|---|---|---|---|---|")
ratios, cpus = [], []
for rnd in rounds:
    a, b = r[("no bitmap", rnd)], r[("bitmap", rnd)]
    ratios.append(b[0] / a[0])
    cpus.append(b[1] / a[1])
    print(f"| {rnd.split()[1]} | {a[0]:,.0f} | {b[0]:,.0f} | {ratios[-1]:.3f} | {a[1]:.1f} | {b[1]:.1f} |")
med = st.median(ratios)
cost = 1 - med
print()
print(f"bitmap cost on 4k randwrite IOPS: median ratio {med:.3f} (rounds {min(ratios):.3f}–{max(ratios):.3f}),"
      f" cost {cost * 100:.1f}% — target < 3%: {'met' if cost < 0.03 else 'missed'}")
print(f"server CPU per request, bitmap/no bitmap: median {st.median(cpus):.3f} (rounds {min(cpus):.3f}–{max(cpus):.3f})")
print()
fm, im = st.median(full), st.median(inc)
rng = lambda v: f"{st.median(v):.3f} s ({min(v):.3f}–{max(v):.3f})"
print("| backup | data | time (median of %d, range) | MiB/s |" % len(full))
print("|---|---|---|---|")
print(f"| full: nbdcopy of d@f1 to a file | {size / 1048576:.0f} MiB | {rng(full)} | {size / 1048576 / fm:,.0f} |")
print(f"| incremental: dirty extents of d@f2 | {inc_bytes / 1048576:.2f} MiB ({inc_bytes / size * 100:.2f}%, "
      f"{inc_extents} extents) | {rng(inc)} | {inc_bytes / 1048576 / im:,.0f} |")
print()
print(f"incremental / full time: {im / fm * 100:.2f}% — target < 2%: {'met' if im / fm < 0.02 else 'missed'};"
      " restore (full + incremental) = d@f2 by sha256")
PYEOF
