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
#
# The 4k rows run twice: one fio job with iodepth 32, and two jobs (two
# connections) of iodepth 16, the same 32 requests in flight. One fio job
# spends ~6 µs of CPU per request itself and tops out near 166k IOPS on
# these cores, whatever the server; two jobs let the client use both.
set -euo pipefail

. "$(dirname "$0")/preamble.sh"
bench_sizes 256 3 2048 15
SERVERS=${SERVERS:-fleece qemu-nbd nbdkit}

bench_work

find_fleece
probe_qemu_aio

make_image

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
  measure "$server" "fio 4k randread 2 jobs x qd16" IOPS fio_run iops --rw=randread --bs=4k --iodepth=16 --numjobs=2
  measure "$server" "8 readers, fio 1M read qd4" MiB/s fio_run bw --rw=read --bs=1M --iodepth=4 --numjobs=8
  RSS[$server]=$(peak_rss_kib "$SRV_PID")
  stop_server

  # Writes go to a sparse copy, so every server starts from the same image.
  cp --sparse=always "$IMG" "$WORK/w.img"
  start_server "$server" "$WORK/w.img" "$SOCK"
  measure "$server" "fio 4k randwrite qd32" IOPS fio_run iops --rw=randwrite --bs=4k --iodepth=32
  measure "$server" "fio 4k randwrite 2 jobs x qd16" IOPS fio_run iops --rw=randwrite --bs=4k --iodepth=16 --numjobs=2
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
