#!/bin/bash
# Benchmarks fleece side by side with qemu-nbd and nbdkit (file plugin), all
# on Unix sockets, in one run; prints a markdown table.
#
#   bench/run.sh              full run: 2 GiB image, 15 s fio runs (~6 min)
#   QUICK=1 bench/run.sh      smoke test: 256 MiB image, 3 s runs
#   FLEECE=path bench/run.sh  use this binary instead of building build-bench
#   SERVERS="fleece nbdkit"   compare a subset
#
# The machine's cores are shared by client and server, so besides throughput
# the table gives each server's own CPU time (from /proc/PID/stat) per GiB or
# per request, and the fleece/peer ratios of both.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
HERE=$SRC/bench
. "$HERE/servers.sh"

QUICK=${QUICK:-}
if [[ -n $QUICK ]]; then SIZE_MIB=256 RUNTIME=3; else SIZE_MIB=2048 RUNTIME=15; fi
SERVERS=${SERVERS:-fleece qemu-nbd nbdkit}

WORK=$(mktemp -d /tmp/fleece-bench.XXXXXX)
SRV_PID=
trap '[[ -n $SRV_PID ]] && kill -KILL $SRV_PID 2>/dev/null; rm -rf "$WORK"' EXIT

if [[ -z ${FLEECE:-} ]]; then
  echo "building fleece (Release) in $SRC/build-bench" >&2
  cmake -S "$SRC" -B "$SRC/build-bench" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLEECE_TESTS=OFF >/dev/null
  ninja -C "$SRC/build-bench" -j2 fleece >&2
  FLEECE=$SRC/build-bench/server/fleece
fi
[[ -x $FLEECE ]] || { echo "no fleece binary at $FLEECE" >&2; exit 1; }
probe_qemu_aio

# The image: 4 MiB chunks, every 4th a hole, the rest random data (75%).
IMG=$WORK/base.img
echo "making a ${SIZE_MIB} MiB image (75% random data, 25% holes)" >&2
/usr/bin/python3 - "$IMG" "$SIZE_MIB" <<'PYEOF'
import os, sys
path, mib = sys.argv[1], int(sys.argv[2])
chunk = 4 << 20
with open(path, "wb") as f:
    f.truncate(mib << 20)
    for i in range((mib << 20) // chunk):
        if i % 4 != 3:
            f.seek(i * chunk)
            f.write(os.urandom(chunk))
PYEOF
SIZE=$((SIZE_MIB << 20))
ROWS=$WORK/rows.tsv
: >"$ROWS"

calc() { awk "BEGIN { print $1 }"; }

# measure SERVER TEST UNIT CMD...: runs CMD, records the result it prints
# (a number in UNIT) and the server's CPU seconds during it.
measure() {
  local server=$1 test=$2 unit=$3; shift 3
  local c0 c1 t0 t1 value work
  c0=$(cpu_seconds "$SRV_PID"); t0=$(date +%s.%N)
  value=$("$@")
  t1=$(date +%s.%N); c1=$(cpu_seconds "$SRV_PID")
  # work: GiB moved (throughput rows) or requests done (IOPS rows).
  work=${value#* }; value=${value%% *}
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$test" "$server" "$unit" "$value" \
    "$(calc "$c1 - $c0")" "$work" >>"$ROWS"
  echo "  $test: $value $unit" >&2
}

# nbdcopy of the whole export to null: prints "MiB/s GiB".
copy_to_null() {
  local conns=$1 t0 t1
  t0=$(date +%s.%N)
  nbdcopy --connections="$conns" "nbd+unix:///d?socket=$SOCK" null:
  t1=$(date +%s.%N)
  echo "$(calc "$SIZE / 1048576 / ($t1 - $t0)") $(calc "$SIZE / 1073741824")"
}

# fio with the nbd engine: prints "IOPS requests" or "MiB/s GiB".
fio_run() {
  local what=$1; shift
  fio --ioengine=nbd --uri="nbd+unix:///d?socket=$SOCK" --size="$SIZE" \
    --time_based --runtime="$RUNTIME" --ramp_time=1 --group_reporting \
    --output-format=json --output="$WORK/fio.json" --name=b "$@" >/dev/null
  /usr/bin/python3 - "$WORK/fio.json" "$what" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
assert j["error"] == 0, f"fio error {j['error']}"
io = j["read"] if j["read"]["io_bytes"] else j["write"]
if sys.argv[2] == "iops":
    print(io["iops"], io["total_ios"])
else:
    print(io["bw_bytes"] / 1048576, io["io_bytes"] / 1073741824)
PYEOF
}

declare -A RSS
for server in $SERVERS; do
  echo "== $server" >&2
  SOCK=$WORK/$server.sock
  start_server "$server" "$IMG" "$SOCK"
  # Warm the page cache the same way for everyone.
  nbdcopy "nbd+unix:///d?socket=$SOCK" null:
  measure "$server" "nbdcopy read, 1 conn" MiB/s copy_to_null 1
  measure "$server" "nbdcopy read, 4 conns" MiB/s copy_to_null 4
  measure "$server" "fio 4k randread qd32" IOPS fio_run iops --rw=randread --bs=4k --iodepth=32
  measure "$server" "8 readers, fio 1M read qd4" MiB/s fio_run bw --rw=read --bs=1M --iodepth=4 --numjobs=8
  RSS[$server]=$(peak_rss_kib "$SRV_PID")
  stop_server

  # Writes go to a sparse copy, so every server starts from the same image.
  cp --sparse=always "$IMG" "$WORK/w.img"
  start_server "$server" "$WORK/w.img" "$SOCK"
  measure "$server" "fio 4k randwrite qd32" IOPS fio_run iops --rw=randwrite --bs=4k --iodepth=32
  r=$(peak_rss_kib "$SRV_PID"); ((r > RSS[$server])) && RSS[$server]=$r
  stop_server
  rm -f "$WORK/w.img"
done
for s in "${!RSS[@]}"; do printf 'rss\t%s\t%s\n' "$s" "${RSS[$s]}" >>"$ROWS"; done

echo
echo "fleece $(git -C "$SRC" describe --always --dirty 2>/dev/null || echo '?'), image ${SIZE_MIB} MiB," \
  "fio runtime ${RUNTIME} s, qemu-nbd $QEMU_AIO, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
/usr/bin/python3 "$HERE/report.py" "$ROWS"
