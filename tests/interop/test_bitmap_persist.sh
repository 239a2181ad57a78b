#!/bin/bash
# Persistent dirty bitmaps: one added by `qemu-img bitmap --add` before the
# start is loaded and frozen by fleece-start; ones added over QMP
# (persistent=true) and the frozen NAME@ID are stored at a clean shutdown
# in the qcow2 bitmaps extension (qemu-img info lists them, qemu-img check
# is clean, qemu-nbd -B serves the same extents) or a raw disk's sidecar;
# they come back after a restart; after kill -9 they come back
# inconsistent (query-block), are refused for use and can be removed.
. "$(dirname "$0")/lib.sh"

qemu-img create -q -f qcow2 "$T/vd.qcow2" 32M
qemu-img bitmap --add "$T/vd.qcow2" pre
truncate -s 32M "$T/r.img" "$T/ro.img"
DISKS=(--disk vd="$T/vd.qcow2",format=qcow2 --disk r="$T/r.img" --disk ro="$T/ro.img",readonly --listen unix:"$T/s")

serve_start "${DISKS[@]}"
timeout 30 $PY "$HERE/qmp/bitmap_persist.py" first "$T/s" "$T/fleece.qmp"
for ((i = 0; i < 100; i++)); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$SERVER_PID" 2>/dev/null && fail "server still running after quit"
SERVER_PID=

info=$(qemu-img info "$T/vd.qcow2")
for b in pre pre@f1 mine; do grep -q "name: $b\$" <<<"$info" || fail "qemu-img info does not list $b: $info"; done
grep -q "name: temp" <<<"$info" && fail "a non-persistent bitmap was stored"
qemu-img check -q "$T/vd.qcow2" || fail "qemu-img check after the clean shutdown"
[[ -s $T/r.img.fleece-bitmaps ]] || fail "no sidecar for the raw disk"
[[ -e $T/ro.img.fleece-bitmaps ]] && fail "a sidecar for the read-only disk"

# QEMU reads what fleece wrote: qemu-nbd -B mine shows the same extents.
timeout 30 qemu-nbd -r -f qcow2 -B mine -k "$T/q" -t "$T/vd.qcow2" &
QNBD=$!
for ((i = 0; i < 100; i++)); do [[ -S $T/q ]] && break; sleep 0.1; done
got=$(timeout 10 nbdinfo --map=qemu:dirty-bitmap:mine "nbd+unix:///?socket=$T/q" | awk '{print $1, $2, $3}')
kill "$QNBD"; wait "$QNBD" 2>/dev/null || true
want=$'0 20971520 0\n20971520 196608 1\n21168128 12386304 0'
[[ $got == "$want" ]] || fail "qemu-nbd -B mine: $got"

serve_start "${DISKS[@]}"
timeout 30 $PY "$HERE/qmp/bitmap_persist.py" second "$T/s" "$T/fleece.qmp"
kill -KILL "$SERVER_PID"
wait "$TIMEOUT_PID" 2>/dev/null || true
SERVER_PID=

serve_start "${DISKS[@]}"
timeout 30 $PY "$HERE/qmp/bitmap_persist.py" third "$T/s" "$T/fleece.qmp"
for ((i = 0; i < 100; i++)); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
SERVER_PID=
info=$(qemu-img info "$T/vd.qcow2")
grep -q "name: mine" <<<"$info" && fail "a removed inconsistent bitmap is still stored"
grep -q "name: pre@f1" <<<"$info" || fail "pre@f1 lost"
qemu-img check -q "$T/vd.qcow2" || fail "qemu-img check after removing inconsistent bitmaps"
echo "test_bitmap_persist: ok"
