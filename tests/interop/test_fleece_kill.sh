#!/bin/bash
# kill -9 of the server during a fleece: the live disk holds every flushed
# write, and the next start removes the stale store (unless another live
# process holds its lock: a store of a server sharing the dir stays).
. "$(dirname "$0")/lib.sh"

ctl() { timeout 30 "$FLEECE" ctl --qmp "$T/fleece.qmp" "$@"; }

make_image "$T/d.img" 16 31
mkdir "$T/stores"
serve_start --disk d="$T/d.img" --listen unix:"$T/s" --store-dir "$T/stores"
ctl fleece-start id=k1 devices:='["d"]' >/dev/null
store=$T/stores/d.fleece-$SERVER_PID-k1.qcow2
[[ -f $store ]] || fail "no store at $store"
# Flushed writes (first touches, so every one is copied into the store first).
timeout 30 $PY - "$T/s" "$T/model.img" "$T/d.img" <<'PYEOF'
import nbd, random, shutil, sys
sock, model, disk = sys.argv[1:4]
shutil.copyfile(disk, model)
h = nbd.NBD()
h.connect_uri("nbd+unix:///d?socket=" + sock)
rng = random.Random(5)
with open(model, "r+b") as m:
    for i in range(200):
        off = rng.randrange(0, 16 << 20, 4096)
        data = rng.randbytes(4096)
        h.pwrite(data, off)
        m.seek(off)
        m.write(data)
h.flush()
PYEOF
kill -KILL "$SERVER_PID"
wait "$TIMEOUT_PID" 2>/dev/null || true
SERVER_PID=
[[ $(sha "$T/d.img") == $(sha "$T/model.img") ]] || fail "the disk lost flushed writes"
[[ -f $store ]] || fail "the store vanished with kill -9 (nothing to clean up: test proves nothing)"

# A store-like file another live process holds locked must survive the sweep.
touch "$T/stores/d.fleece-999999-other.qcow2"
hold_lock "$T/stores/d.fleece-999999-other.qcow2"
lock_pid=$HOLDER_PID
serve_start --disk d="$T/d.img" --listen unix:"$T/s" --store-dir "$T/stores"
[[ ! -e $store ]] || fail "stale store not removed at start-up"
grep -q "removed the stale store" "$SERVER_LOG" || fail "no log line for the stale store"
[[ -e $T/stores/d.fleece-999999-other.qcow2 ]] || fail "a locked store (live owner) was removed"
kill "$lock_pid" 2>/dev/null || true
wait "$lock_pid" 2>/dev/null || true
# Still serving the disk with the writes, and fleecing works again.
nbdcopy "nbd+unix:///d?socket=$T/s" "$T/out.img"
[[ $(sha "$T/out.img") == $(sha "$T/model.img") ]] || fail "served disk differs after restart"
ctl fleece-start id=k1 devices:='["d"]' >/dev/null
serve_stop
[[ -z $(find "$T/stores" -name "d.fleece-*-k1.qcow2") ]] || fail "store left after a clean stop"
echo "test_fleece_kill: ok"
