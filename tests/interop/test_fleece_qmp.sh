#!/bin/bash
# QMP fleece-start/-stop/query-fleeces: bad arguments each get a clear error
# and the server keeps serving; the NAME@ID export (TRIM offered, writes
# EPERM, multi-conn, base:allocation of the frozen image); qemu-img check and
# info of a live store; discard on the view then read -> EIO; a store limit
# breaks a snapshot with FLEECE_BROKEN; fleece-stop deletes the stores.
. "$(dirname "$0")/lib.sh"

make_image "$T/d.img" 8 21
make_image "$T/e.img" 4 22
serve_start --disk d="$T/d.img" --disk e="$T/e.img" --listen unix:"$T/s"
timeout 60 $PY "$HERE/fleece_qmp.py" "$T/s" "$T/fleece.qmp" "$T/d.img"
assert_server_alive
serve_stop
[[ -z $(find "$T" -name '*.fleece-*.qcow2') ]] || fail "stores left: $(find "$T" -name '*.fleece-*.qcow2')"
echo "test_fleece_qmp: ok"
