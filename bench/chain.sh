#!/bin/bash
# qcow2 backing chains: fleece side by side with qemu-nbd serving the same
# qcow2 chain, and fleece's live block-commit against `qemu-img commit` of
# the same chain (offline), in one run; prints a markdown table.
#
#   bench/chain.sh              1 GiB image, 10 s fio runs (~2-3 min)
#   QUICK=1 bench/chain.sh      256 MiB image, 3 s runs
#   FLEECE=path bench/chain.sh  use this binary instead of building build-bench
#
# I/O rows: data.qcow2 (the bench image converted, 75% data) <- top.qcow2
# (an empty overlay), served as one qcow2 disk with writeback caching; reads
# go through the chain, writes allocate in the overlay (a fresh one per
# server). Commit rows: master.img (raw) <- cow.qcow2 (data in every other
# MiB, half the disk) <- newcow.qcow2; cow.qcow2 is merged into master.img
#   qemu-img     `qemu-img commit -d cow.qcow2`, nothing served (offline)
#   fleece       QMP block-commit top=cow.qcow2 while serving newcow.qcow2:
#                idle; under fio 4k random writes (qd8) to the live export,
#                which also gives the guest's IOPS during the commit; and
#                with speed=64 MiB/s under the same writes (how well the
#                limit is held: the achieved rate); and, for reference, the
#                same writes with no commit
# Commit results are MiB/s of cow.qcow2's data; CPU is the process's (for
# fleece under load it includes serving the writes).
set -euo pipefail

. "$(dirname "$0")/preamble.sh"
bench_sizes 256 3 1024 10
LIMIT_MIB=64

bench_work

find_fleece
probe_qemu_aio
make_image
SOCK=$WORK/s
URI="nbd+unix:///d?socket=$SOCK"
QMP_PY="/usr/bin/python3 $HERE/chain_qmp.py $WORK/fleece.qmp"

# serve NAME TOP: the chain whose active layer is TOP, as export d.
serve() {
  rm -f "$SOCK"
  case $1 in
    fleece)
      "$FLEECE" serve --disk d="$2",format=qcow2,cache=writeback --listen unix:"$SOCK" \
        --qmp unix:"$WORK/fleece.qmp" --log-level warn >"$WORK/fleece.out" 2>"$WORK/fleece.err" &
      SRV_PID=$!
      wait_for 'grep -qx "fleece: ready" "$WORK/fleece.out" 2>/dev/null' fleece ;;
    qemu-nbd)
      qemu-nbd -f qcow2 -t -k "$SOCK" --cache=writeback $QEMU_AIO -e 16 -x d "$2" 2>"$WORK/qemu-nbd.err" &
      SRV_PID=$!
      wait_for '[[ -S $SOCK ]]' qemu-nbd ;;
  esac
}

# fio_nbd ARGS...: fio's nbd engine on export d, time-based; prints "IOPS requests".
fio_nbd() {
  fio --ioengine=nbd --uri="$URI" --size="$SIZE" --bs=4k --iodepth=32 --time_based --runtime="$RUNTIME" \
    --ramp_time=1 --group_reporting --output-format=json --output="$WORK/fio.json" --name=b "$@" >/dev/null
  /usr/bin/python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; assert j["error"]==0
io = j["read"] if j["read"]["io_bytes"] else j["write"]; print(io["iops"], io["total_ios"])' "$WORK/fio.json"
}

overlay() {  # a fresh empty top.qcow2 over data.qcow2
  rm -f "$WORK/top.qcow2"
  (cd "$WORK" && qemu-img create -q -f qcow2 -b data.qcow2 -F qcow2 top.qcow2)
}

echo "converting the image to qcow2" >&2
qemu-img convert -f raw -O qcow2 "$IMG" "$WORK/data.qcow2"
for server in fleece qemu-nbd; do
  echo "== $server" >&2
  overlay
  serve "$server" "$WORK/top.qcow2"
  nbdcopy "$URI" null:  # the page cache warmed the same way for both
  measure "$server" "qcow2 chain: nbdcopy read, 1 conn" MiB/s copy_to_null 1
  measure "$server" "qcow2 chain: fio 4k randread qd32" IOPS fio_nbd --rw=randread
  stop_server
  overlay
  serve "$server" "$WORK/top.qcow2"
  measure "$server" "qcow2 chain: fio 4k randwrite qd32 (allocating)" IOPS fio_nbd --rw=randwrite
  stop_server
done

# ------------------------------------------------------------ commit
COMMIT_BYTES=$((SIZE / 2))
echo "making master.img <- cow.qcow2 ($((COMMIT_BYTES >> 20)) MiB of data) <- newcow.qcow2" >&2
cp --sparse=always "$IMG" "$WORK/chain0-master.img"
(cd "$WORK" && qemu-img create -q -f qcow2 -b chain0-master.img -F raw chain0-cow.qcow2)
writes=()
for ((i = 0; i < SIZE_MIB; i += 2)); do writes+=(-c "write -P $((i % 251)) ${i}M 1M"); done
qemu-io -f qcow2 "${writes[@]}" "$WORK/chain0-cow.qcow2" >/dev/null
fresh_chain() {  # master.img <- cow.qcow2 <- newcow.qcow2, from the pristine copy
  rm -f "$WORK"/master.img "$WORK"/cow.qcow2 "$WORK"/newcow.qcow2
  cp --sparse=always "$WORK/chain0-master.img" "$WORK/master.img"
  cp --sparse=always "$WORK/chain0-cow.qcow2" "$WORK/cow.qcow2"
  (cd "$WORK" && qemu-img rebase -u -f qcow2 -b master.img -F raw cow.qcow2 &&
    qemu-img create -q -f qcow2 -b cow.qcow2 -F qcow2 newcow.qcow2)
}
sync

# row TEST SERVER SECONDS CPU: a commit row in MiB/s of cow.qcow2's data.
row() {
  printf '%s\t%s\tMiB/s\t%s\t%s\t%s\n' "$1" "$2" "$(calc "$COMMIT_BYTES / 1048576 / $3")" "$4" \
    "$(calc "$COMMIT_BYTES / 1073741824")" >>"$ROWS"
  echo "  $1: $2 $3 s" >&2
}

echo "== qemu-img commit (offline)" >&2
fresh_chain
read -r secs cpu < <(/usr/bin/time -f '%e %U %S' qemu-img commit -q -d -f qcow2 "$WORK/cow.qcow2" 2>&1 >/dev/null |
  awk '{ print $1, $2 + $3 }')
for t in "commit, idle" "commit, under 4k randwrite qd8" "commit, speed=$LIMIT_MIB MiB/s, under 4k randwrite qd8"; do
  row "$t (qemu-img: offline)" qemu-img "$secs" "$cpu"
done

# live_commit TEST SPEED LOAD: block-commit on a fresh chain served by fleece.
live_commit() {
  local test=$1 speed=$2 load=$3 c0 c1 out
  fresh_chain
  serve fleece "$WORK/newcow.qcow2"
  if [[ $load == yes ]]; then
    fio --ioengine=nbd --uri="$URI" --size="$SIZE" --bs=4k --iodepth=8 --rw=randwrite --time_based \
      --runtime=600 --name=guest --output="$WORK/guest.out" >/dev/null &
    FIO_PID=$!
    sleep 1
  fi
  c0=$(cpu_seconds "$SRV_PID")
  out=$($QMP_PY "$speed")  # "seconds guest-writes"
  c1=$(cpu_seconds "$SRV_PID")
  if [[ -n $FIO_PID ]]; then kill -INT "$FIO_PID"; wait "$FIO_PID" 2>/dev/null || true; FIO_PID=; fi
  stop_server
  row "$test (qemu-img: offline)" fleece "${out%% *}" "$(calc "$c1 - $c0")"
  if [[ $load == yes ]]; then
    printf '%s\tfleece\tIOPS\t%s\t%s\t%s\n' "guest 4k randwrite qd8 during $test" \
      "$(calc "${out#* } / ${out%% *}")" "$(calc "$c1 - $c0")" "${out#* }" >>"$ROWS"
  fi
  (cd "$WORK" && qemu-img check -q newcow.qcow2) || { echo "qemu-img check failed after $test" >&2; exit 1; }
}
echo "== fleece block-commit (live)" >&2
fresh_chain  # the guest's writes without a commit, for reference
serve fleece "$WORK/newcow.qcow2"
measure fleece "guest 4k randwrite qd8, no commit" IOPS fio_nbd --rw=randwrite --iodepth=8
stop_server
live_commit "commit, idle" 0 no
live_commit "commit, under 4k randwrite qd8" 0 yes
live_commit "commit, speed=$LIMIT_MIB MiB/s, under 4k randwrite qd8" $((LIMIT_MIB << 20)) yes

echo
echo "fleece $(git -C "$SRC" describe --always --dirty 2>/dev/null || echo '?'), image ${SIZE_MIB} MiB," \
  "fio runtime ${RUNTIME} s, qemu-nbd $QEMU_AIO, $(nproc) cores, $(date -u +%Y-%m-%d), load:$(uptime | sed 's/.*load average://')"
echo
/usr/bin/python3 "$HERE/report.py" "$ROWS" | sed '/^| server | peak RSS/,$d'
