#!/bin/bash
# Readiness for integrators: ready line, NOTIFY_SOCKET, LISTEN_FDS activation.
. "$(dirname "$0")/lib.sh"

[[ -x $FLEECE ]] || fail "fleece binary not found at $FLEECE"
make_image "$T/d.img" 4 31
for mode in ready-line notify activation; do
  rm -f "$T/r.sock" "$T/notify"
  timeout 90 $PY "$HERE/readiness.py" "$mode" "$T" "$FLEECE" "$T/d.img" || fail "readiness: $mode"
done
echo "test_readiness: ok"
