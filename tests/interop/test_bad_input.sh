#!/bin/bash
# Hostile and broken clients (bad_input.py) while a well-behaved client keeps
# working; the server survives and the disk holds exactly the acknowledged
# writes.
. "$(dirname "$0")/lib.sh"

truncate -s 16M "$T/d.img"
serve_start --disk d="$T/d.img" --listen unix:"$T/s"
rc=0
timeout 120 $PY "$HERE/bad_input.py" "$T/s" d "$T/state.json" || rc=$?
assert_server_alive
serve_stop
[[ -s $T/state.json ]] || fail "bad_input.py did not finish (status $rc)"
$PY "$HERE/bad_input.py" --check "$T/d.img" "$T/state.json" || fail "disk content"
((rc == 0)) || fail "some bad-input scenarios failed (see above)"
echo "test_bad_input: ok"
