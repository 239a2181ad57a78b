#!/bin/bash
# Stale stores of a disk added at run time: a store a kill -9'd server left
# beside a disk is deleted when blockdev-add opens that disk (start-up swept
# only the --disk disks), while a store-named file another live process
# holds locked stays. Then fleecing the added disk works and leaves nothing.
. "$(dirname "$0")/lib.sh"

ctl() { timeout 30 "$FLEECE" ctl --qmp "$T/fleece.qmp" "$@"; }

mkdir "$T/vm"
make_image "$T/vm/d.img" 8 51
make_image "$T/e.img" 4 52
serve_start --disk d="$T/vm/d.img" --listen unix:"$T/s"
ctl fleece-start id=k1 devices:='["d"]' >/dev/null
store=$T/vm/d.fleece-$SERVER_PID-k1.qcow2
[[ -f $store ]] || fail "no store at $store"
kill -KILL "$SERVER_PID"
wait "$TIMEOUT_PID" 2>/dev/null || true
SERVER_PID=
[[ -f $store ]] || fail "the store vanished with kill -9 (nothing to clean up: test proves nothing)"

# A store-like file beside the disk that a live process holds locked.
held=$T/vm/d.fleece-999999-other.qcow2
touch "$held"
hold_lock "$held"
lock_pid=$HOLDER_PID
# A file that only looks similar is not a store and is never touched.
touch "$T/vm/d.fleece-notastore.qcow2"

# The new server starts without d: its start-up sweep does not look in vm/.
serve_start --disk e="$T/e.img" --listen unix:"$T/s"
[[ -f $store ]] || fail "the stale store went before its disk was added (test proves nothing)"
ctl blockdev-add node-name=d driver=file filename="$T/vm/d.img" >/dev/null || fail "blockdev-add failed"
[[ ! -e $store ]] || fail "stale store beside a blockdev-add'ed disk not removed"
grep -q "removed the stale store $store" "$SERVER_LOG" || fail "no log line for the stale store"
[[ -e $held ]] || fail "a locked store (live owner) was removed"
[[ -e $T/vm/d.fleece-notastore.qcow2 ]] || fail "a file not named like a store was removed"
kill "$lock_pid" 2>/dev/null || true
wait "$lock_pid" 2>/dev/null || true

# The added disk fleeces: its frozen view equals the image, and the store goes at fleece-stop.
ctl nbd-server-add device=d name=d writable:=true >/dev/null
ctl fleece-start id=k2 devices:='["d"]' >/dev/null
[[ -f $T/vm/d.fleece-$SERVER_PID-k2.qcow2 ]] || fail "no store for the added disk"
cp "$T/vm/d.img" "$T/before.img"
timeout 30 $PY -c 'import nbd, sys
h = nbd.NBD(); h.connect_uri("nbd+unix:///d?socket=" + sys.argv[1])
h.pwrite(b"\xab" * 65536, 0); h.flush(); h.shutdown()' "$T/s"
nbdcopy "nbd+unix:///d@k2?socket=$T/s" "$T/view.img"
[[ $(sha "$T/view.img") == $(sha "$T/before.img") ]] || fail "the frozen view of the added disk differs"
ctl fleece-stop id=k2 >/dev/null
[[ ! -e $T/vm/d.fleece-$SERVER_PID-k2.qcow2 ]] || fail "store left after fleece-stop"
serve_stop
rm -f "$held" "$T/vm/d.fleece-notastore.qcow2"
[[ -z $(find "$T" -name '*.fleece-*.qcow2') ]] || fail "stores left: $(find "$T" -name '*.fleece-*.qcow2')"
echo "test_fleece_stale_add: ok"
