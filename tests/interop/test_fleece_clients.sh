#!/bin/bash
# query-fleeces: each client of a NAME@ID export reports the bytes it read
# (two clients reading different amounts, exact figures; failed reads and
# the live export count nothing).
. "$(dirname "$0")/lib.sh"

make_image "$T/d.img" 16 41
serve_start --disk d="$T/d.img" --listen unix:"$T/s"
timeout 60 $PY "$HERE/qmp/fleece_clients.py" "$T/s" "$T/fleece.qmp" || fail "fleece_clients.py failed"
assert_server_alive
serve_stop
[[ -z $(find "$T" -name '*.fleece-*.qcow2') ]] || fail "stores left: $(find "$T" -name '*.fleece-*.qcow2')"
echo "test_fleece_clients: ok"
