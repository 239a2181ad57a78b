#!/bin/bash
# fio random writes (4 jobs, one connection each, iodepth 16) through the
# live export while two nbdcopy readers copy the frozen view over and over:
# every copy equals the image as it was at fleece-start, fio's own verify
# pass finds its writes on the live disk, and a second fleece started under
# the load reports its write pause. fleece-stop deletes the stores.
. "$(dirname "$0")/lib.sh"

ctl() { timeout 30 "$FLEECE" ctl --qmp "$T/fleece.qmp" "$@"; }

make_image "$T/d.img" 64 11
want=$(sha "$T/d.img")
serve_start --disk d="$T/d.img" --listen unix:"$T/s"

jget() { $PY -c 'import json,sys; print(json.dumps(eval("json.loads(sys.argv[1])" + sys.argv[2])))' "$@"; }
out=$(ctl fleece-start id=b1 devices:='["d"]')
[[ $(jget "$out" '["exports"]') == '["d@b1"]' ]] || fail "fleece-start: $out"
store=$T/d.fleece-$SERVER_PID-b1.qcow2
[[ -f $store ]] || fail "no store beside the disk ($store)"

timeout 60 fio --name=w --ioengine=nbd --uri="nbd+unix:///d?socket=$T/s" --rw=randwrite \
  --bs=4k --iodepth=16 --numjobs=4 --size=16m --offset_increment=16m \
  --verify=crc32c --do_verify=1 --verify_fatal=1 --group_reporting >"$T/fio.out" 2>&1 &
fio_pid=$!

reader() {  # reader N: copies d@b1 until fio ends (at least twice), checks each copy
  local n=$1 i=0
  while ((i < 2)) || kill -0 $fio_pid 2>/dev/null; do
    rm -f "$T/copy$n.img"
    timeout 30 nbdcopy --connections=2 "nbd+unix:///d@b1?socket=$T/s" "$T/copy$n.img"
    [[ $(sha "$T/copy$n.img") == "$want" ]] || { echo "reader $n copy $i differs" >"$T/reader$n.fail"; return 1; }
    i=$((i + 1))
  done
  echo $i >"$T/reader$n.count"
}
reader 1 & r1=$!
reader 2 & r2=$!
sleep 0.3
out=$(ctl fleece-start id=b2 devices:='["d"]')
pause=$(jget "$out" '["write-pause-us"]')
log "fleece-start under load: writes paused $pause us"
wait $fio_pid || { cat "$T/fio.out" >&2; fail "fio failed (its verify checks the live disk)"; }
wait $r1 || fail "$(cat "$T/reader1.fail" 2>/dev/null)"
wait $r2 || fail "$(cat "$T/reader2.fail" 2>/dev/null)"
log "copies during writes: $(cat "$T/reader1.count") + $(cat "$T/reader2.count"), all equal to the pre-image"
# b2's view reads completely (its point in time was under load).
timeout 30 nbdcopy "nbd+unix:///d@b2?socket=$T/s" "$T/b2.img"

q=$(ctl query-fleeces)
$PY - "$q" <<'PYEOF' || fail "query-fleeces: $q"
import json, sys
f = {x["id"]: x for x in json.loads(sys.argv[1])}
d, d2 = f["b1"]["devices"][0], f["b2"]["devices"][0]
assert d["device"] == "d" and d["export"] == "d@b1" and not d["broken"] and not d2["broken"]
# A first write is copied once, into the newest store that needs it (b2's
# once b2 started); b1 reads those clusters through it.
assert d["preserved-bytes"] + d2["preserved-bytes"] > 0 and d2["store-bytes"] > 0
assert d["read-bytes"] >= 4 * 40 * 2**20  # four copies or more, ~45 MiB each (holes skipped)
assert "write-pause-us" in f["b1"]
PYEOF
ctl fleece-stop id=b2 >/dev/null
ctl fleece-stop id=b1 >/dev/null
[[ ! -e $store ]] || fail "store still there after fleece-stop"
[[ -z $(ls "$T" | grep "fleece-.*qcow2" || true) ]] || fail "stores left: $(ls "$T")"
$PY - "$T/s" <<'PYEOF' || fail "d@b1 still exported after fleece-stop"
import nbd, sys
h = nbd.NBD()
try:
    h.connect_uri("nbd+unix:///d@b1?socket=" + sys.argv[1])
except nbd.Error:
    sys.exit(0)
sys.exit(1)
PYEOF
assert_server_alive
serve_stop
echo "test_fleece_fio: ok"
