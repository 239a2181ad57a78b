#!/bin/bash
# Fleecing, fleece side by side with qemu-storage-daemon doing the same job
# (copy-before-write filter into a qcow2 backed by the disk, snapshot-access,
# NBD exports of both), same raw image, stores with the same 64 KiB qcow2
# clusters, one run. fleece copies 4 KiB units (its default granularity, kept
# in subclusters); qsd copies whole 64 KiB clusters (QEMU 7.2's least).
#
#   bench/fleece.sh             full run (1 GiB image, 10 s fio runs)
#   QUICK=1 bench/fleece.sh     256 MiB image, 3 s runs
#   FLEECE=build/server/fleece bench/fleece.sh   use an existing binary
#
# Rows (fio's nbd engine, iodepth 32, one connection; writes go to a fully
# allocated copy of the image, so that no row pays for file-system
# allocation that another does not):
#   no snapshot   4k random writes, time-based
#   first touch   4k writes each to a fresh 64 KiB cluster (stride 64 KiB, the
#                 whole disk once) right after the snapshot starts
#   first touch 64k  (fleece only) the same pass on a fresh snapshot with
#                 granularity=65536: fleece copying whole clusters, as qsd does
#   steady        4k random writes once every cluster has been preserved
#   flushing      4k random writes with a FLUSH after every 32 (fio --fsync=32)
#                 on a fresh snapshot, and the same with no snapshot: what a
#                 guest that syncs pays while the copies go into the store
#   view read     nbdcopy --connections=4 of the frozen view to null while
#                 4k random writes run at 5,000 IOPS (fresh snapshot): the same
#                 write load on both servers, within what qsd sustains. One
#                 pass takes well under a second, so the row is the median of
#                 VIEW_ROUNDS passes (5), each on a fresh snapshot, each after
#                 a sync (so that no server pays for writing back what an
#                 earlier row wrote: stopping qsd flushes its image anyway)
#   view read max the same with the writes unthrottled: on 2 cores the reader
#                 and the writer share the CPU, so the server whose guest
#                 writes go faster leaves less to its reader
#   1 vs 3        (fleece only) 4k random writes with 1, then 3 fresh snapshots
#                 (twice, alternating; the mean of each)
#   start pause   (fleece only) fleece-start while 4k random writes run: how
#                 long writes waited (write-pause-us; median and max of 5),
#                 and how long the command took to answer
# The table goes to stdout, progress to stderr.
set -euo pipefail

. "$(dirname "$0")/preamble.sh"
bench_sizes 256 3 1024 10
CLUSTER=65536
VIEW_ROUNDS=${VIEW_ROUNDS:-5}
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

bench_work

find_fleece
make_image
SOCK=$WORK/s
RESULTS=$WORK/fleece.tsv
: >"$RESULTS"

# fio_w EXPORT ARGS...: prints "IOPS P99_US" of the writes.
fio_w() {
  local export=$1; shift
  fio --ioengine=nbd --uri="nbd+unix:///$export?socket=$SOCK" --size="$SIZE" --bs=4k \
    --iodepth=32 --group_reporting --output-format=json --output="$WORK/fio.json" --name=b "$@" >/dev/null
  /usr/bin/python3 - "$WORK/fio.json" <<'PYEOF'
import json, sys
w = json.load(open(sys.argv[1]))["jobs"][0]["write"]
print(round(w["iops"]), round(w["clat_ns"]["percentile"]["99.000000"] / 1000))
PYEOF
}
randwrite() { fio_w d --rw=randwrite --time_based --runtime="$RUNTIME" --ramp_time=1; }
# Prints "IOPS FLUSH_P99_US": write IOPS, and the 99th percentile of the FLUSHes.
flushing() {
  fio --ioengine=nbd --uri="nbd+unix:///d?socket=$SOCK" --size="$SIZE" --bs=4k --iodepth=32 \
    --rw=randwrite --fsync=32 --time_based --runtime="$RUNTIME" --name=b --output-format=json \
    --output="$WORK/fio.json" >/dev/null
  /usr/bin/python3 - "$WORK/fio.json" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
print(round(j["write"]["iops"]), round(j["sync"]["lat_ns"]["percentile"]["99.000000"] / 1000))
PYEOF
}
# --number_ios: one pass; fio's size counts bytes written, so without it the
# stride would wrap round the disk 16 times and 15 passes would be steady state.
first_touch() { fio_w d --rw=write:$((CLUSTER - 4096)) --number_ios=$((SIZE / CLUSTER)); }
fill() { fio_w d --rw=write --bs=1M --iodepth=8 >/dev/null; }  # preserves every cluster

record() {  # record SERVER TEST "IOPS P99" | record SERVER TEST VALUE
  printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"
  echo "  $2: $3" >&2
}

# view_read VIEW [IOPS]: nbdcopy of VIEW while random writes run (at most
# IOPS if given); prints MiB/s.
view_read() {
  sync
  fio --ioengine=nbd --uri="nbd+unix:///d?socket=$SOCK" --size="$SIZE" --bs=4k --iodepth=32 \
    --rw=randwrite --time_based --runtime=$((RUNTIME * 3)) ${2:+--rate_iops=$2} --name=bg --output=/dev/null &
  local fio_pid=$! t0 t1
  sleep 1
  t0=$(date +%s.%N)
  nbdcopy --connections=4 "nbd+unix:///$1?socket=$SOCK" null:
  t1=$(date +%s.%N)
  kill "$fio_pid" 2>/dev/null || true
  wait "$fio_pid" 2>/dev/null || true
  calc "$SIZE / 1048576 / ($t1 - $t0)"
}

# ---------------------------------------------------------------- fleece
ctl() { "$FLEECE" ctl --qmp "$WORK/fleece.qmp" "$@"; }
fleece_start() {
  rm -f "$SOCK"
  mkdir -p "$WORK/stores"
  : >"$WORK/fleece.out"
  "$FLEECE" serve --disk d="$1",cache=writeback --listen unix:"$SOCK" --qmp unix:"$WORK/fleece.qmp" \
    --store-dir "$WORK/stores" --log-level warn >"$WORK/fleece.out" 2>"$WORK/fleece.err" &
  SRV_PID=$!
  wait_for 'grep -qx "fleece: ready" "$WORK/fleece.out"' "fleece"
}
snap() { ctl fleece-start id="$1" devices:='["d"]' cluster-size=$CLUSTER >/dev/null; }
unsnap() { ctl fleece-stop id="$1" >/dev/null; }

echo "== fleece" >&2
cp --sparse=never "$IMG" "$WORK/w.img"
sync "$WORK/w.img"  # no row pays for writing back the copy
fleece_start "$WORK/w.img"
record fleece "no snapshot" "$(randwrite)"
record fleece "flushing no snapshot" "$(flushing)"
snap f1
record fleece "flushing" "$(flushing)"
unsnap f1
snap s1
record fleece "first touch" "$(first_touch)"
fill
record fleece "steady" "$(randwrite)"
unsnap s1
# The same pass with fleece copying whole 64 KiB clusters, as qsd does.
ctl fleece-start id=s64k devices:='["d"]' cluster-size=$CLUSTER granularity=$CLUSTER >/dev/null
record fleece "first touch 64k" "$(first_touch)"
unsnap s64k
reads=()
for round in $(seq "$VIEW_ROUNDS"); do
  snap v$round
  reads+=("$(view_read d@v$round 5000)")
  unsnap v$round
done
record fleece "view read" "$(median "${reads[@]}")"
record fleece "view read passes" "${reads[*]}"
snap s3
record fleece "view read max" "$(view_read d@s3)"
unsnap s3
one=() three=()
for round in 1 2; do
  snap x1
  one+=("$(randwrite)")
  unsnap x1
  snap y1; snap y2; snap y3
  three+=("$(randwrite)")
  unsnap y1; unsnap y2; unsnap y3
done
mean() { /usr/bin/python3 -c 'import sys; v=[list(map(float, a.split())) for a in sys.argv[1:]]; print(*[round(sum(c)/len(c)) for c in zip(*v)])' "$@"; }
record fleece "1 snapshot" "$(mean "${one[@]}")"
record fleece "3 snapshots" "$(mean "${three[@]}")"
fio --ioengine=nbd --uri="nbd+unix:///d?socket=$SOCK" --size="$SIZE" --bs=4k --iodepth=32 \
  --rw=randwrite --time_based --runtime=$((RUNTIME + 2)) --name=bg --output=/dev/null &
bg=$!
pauses=() replies=()
for i in 1 2 3 4 5; do
  sleep "$(calc "$RUNTIME / 6")"
  t0=$(date +%s.%N)
  pause=$(ctl fleece-start id=z$i devices:='["d"]' | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["write-pause-us"])')
  replies+=("$(calc "($(date +%s.%N) - $t0) * 1000")")
  pauses+=("$pause")
done
wait "$bg"
median_max() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[3], v[5] }'; }
record fleece "start pause" "$(median_max "${pauses[@]}")"
# From the second on, each start also re-points the previous newest store's
# backing link while the writes go on.
record fleece "start reply" "$(median_max "${replies[@]}")"
stop_server
[[ -z $(ls -A "$WORK/stores") ]] || { echo "stores left after shutdown: $(ls "$WORK/stores")" >&2; exit 1; }
rm -f "$WORK/w.img"

# ---------------------------------------------------------------- qsd
# qsd_start IMG plain|cbw: export d is the disk (plain) or the CBW filter over
# it (cbw), with export snap = snapshot-access of a fresh qcow2 target.
qsd_start() {
  local img=$1 mode=$2 graph=()
  rm -f "$SOCK" "$WORK/qsd.pid"
  graph=(--blockdev "driver=file,node-name=src,filename=$img,aio=io_uring")
  if [[ $mode == cbw ]]; then
    rm -f "$WORK/tmp.qcow2"
    qemu-img create -q -f qcow2 -o cluster_size=$CLUSTER -b "$img" -F raw "$WORK/tmp.qcow2"
    graph+=(--blockdev "driver=qcow2,node-name=tmp,file.driver=file,file.filename=$WORK/tmp.qcow2,backing=src"
            --blockdev "driver=copy-before-write,node-name=cbw,file=src,target=tmp"
            --blockdev "driver=snapshot-access,node-name=acc,file=cbw"
            --export "type=nbd,id=e0,node-name=cbw,name=d,writable=on"
            --export "type=nbd,id=e1,node-name=acc,name=snap")
  else
    graph+=(--export "type=nbd,id=e0,node-name=src,name=d,writable=on")
  fi
  qemu-storage-daemon --nbd-server "addr.type=unix,addr.path=$SOCK" "${graph[@]}" \
    --pidfile "$WORK/qsd.pid" 2>"$WORK/qsd.err" &
  SRV_PID=$!
  wait_for '[[ -s $WORK/qsd.pid && -S $SOCK ]]' "qemu-storage-daemon"
}

echo "== qemu-storage-daemon" >&2
cp --sparse=never "$IMG" "$WORK/w.img"
sync "$WORK/w.img"  # no row pays for writing back the copy
qsd_start "$WORK/w.img" plain
record qsd "no snapshot" "$(randwrite)"
record qsd "flushing no snapshot" "$(flushing)"
stop_server
qsd_start "$WORK/w.img" cbw
record qsd "flushing" "$(flushing)"
stop_server
qsd_start "$WORK/w.img" cbw
record qsd "first touch" "$(first_touch)"
fill
record qsd "steady" "$(randwrite)"
stop_server
reads=()
for round in $(seq "$VIEW_ROUNDS"); do
  qsd_start "$WORK/w.img" cbw
  reads+=("$(view_read snap 5000)")
  stop_server
done
record qsd "view read" "$(median "${reads[@]}")"
record qsd "view read passes" "${reads[*]}"
qsd_start "$WORK/w.img" cbw
record qsd "view read max" "$(view_read snap)"
stop_server
rm -f "$WORK/w.img"

echo
echo "fleece $(git -C "$SRC" describe --always --dirty 2>/dev/null || echo '?') vs $(qemu-storage-daemon --version | head -1)," \
  "image ${SIZE_MIB} MiB, store clusters 64 KiB (fleece copies 4 KiB subclusters), fio 4k qd32 runs ${RUNTIME} s, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
/usr/bin/python3 - "$RESULTS" <<'PYEOF'
import sys
r = {}
for line in open(sys.argv[1]):
    server, test, value = line.rstrip("\n").split("\t")
    r[(server, test)] = [float(x) for x in value.split()]
f = lambda n: f"{n:,.0f}"
print("| test | fleece | qsd | fleece/qsd |")
print("|---|---|---|---|")
for test, label in (("no snapshot", "4k randwrite, no snapshot"), ("first touch", "4k first-touch writes, fresh snapshot"),
                    ("steady", "4k randwrite, steady state")):
    a, b = r[("fleece", test)], r[("qsd", test)]
    print(f"| {label}: IOPS | {f(a[0])} | {f(b[0])} | {a[0] / b[0]:.2f} |")
    print(f"| {label}: p99 µs | {f(a[1])} | {f(b[1])} | {a[1] / b[1]:.2f} |")
for test, label in (("flushing no snapshot", "4k randwrite, FLUSH every 32 writes, no snapshot"),
                    ("flushing", "4k randwrite, FLUSH every 32 writes, fresh snapshot")):
    a, b = r[("fleece", test)], r[("qsd", test)]
    print(f"| {label}: IOPS | {f(a[0])} | {f(b[0])} | {a[0] / b[0]:.2f} |")
    print(f"| {label}: FLUSH p99 µs | {f(a[1])} | {f(b[1])} | {a[1] / b[1]:.2f} |")
a, b = r[("fleece", "first touch 64k")], r[("qsd", "first touch")]
label = "4k first-touch writes, fresh snapshot, fleece granularity=65536 (whole clusters, as qsd)"
print(f"| {label}: IOPS | {f(a[0])} | {f(b[0])} | {a[0] / b[0]:.2f} |")
print(f"| {label}: p99 µs | {f(a[1])} | {f(b[1])} | {a[1] / b[1]:.2f} |")
a, b = r[("fleece", "view read")][0], r[("qsd", "view read")][0]
n = len(r[("fleece", "view read passes")])
print(f"| nbdcopy of the frozen view under 5,000 write IOPS (median of {n}): MiB/s | {f(a)} | {f(b)} | {a / b:.2f} |")
a, b = r[("fleece", "view read max")][0], r[("qsd", "view read max")][0]
print(f"| nbdcopy of the frozen view under unthrottled writes: MiB/s | {f(a)} | {f(b)} | {a / b:.2f} |")
print(f"| 4k randwrite, 1 fresh snapshot: IOPS | {f(r[('fleece', '1 snapshot')][0])} | | |")
print(f"| 4k randwrite, 3 fresh snapshots: IOPS | {f(r[('fleece', '3 snapshots')][0])} | | |")
p = r[('fleece', 'start pause')]
print(f"| fleece-start under writes: write pause µs (median, max of 5) | {f(p[0])}, {f(p[1])} | | |")
p = r[('fleece', 'start reply')]
print(f"| fleece-start under writes: reply ms, `fleece ctl` included (median, max of 5) | {f(p[0])}, {f(p[1])} | | |")
print()
for s in ("fleece", "qsd"):
    n = r[(s, "no snapshot")][0]
    print(f"{s}: first touch / no snapshot = {r[(s, 'first touch')][0] / n:.2f}, steady / no snapshot = {r[(s, 'steady')][0] / n:.2f}, "
          f"flushing with / without a snapshot = {r[(s, 'flushing')][0] / r[(s, 'flushing no snapshot')][0]:.2f}")
print(f"fleece: 3 snapshots / 1 snapshot = {r[('fleece', '3 snapshots')][0] / r[('fleece', '1 snapshot')][0]:.2f}")
for s in ("fleece", "qsd"):
    print(f"{s}: view read passes under 5,000 write IOPS, MiB/s: {', '.join(f(x) for x in r[(s, 'view read passes')])}")
PYEOF
