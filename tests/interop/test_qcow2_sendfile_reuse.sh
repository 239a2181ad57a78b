#!/bin/bash
# A qcow2 live export's READ reply held unread in the socket (sendfile keeps
# the page-cache pages) keeps its bytes when the cluster is discarded and
# another offset is written: freed clusters that were sent are not reused.
# Then qemu-img check accepts the image.
. "$(dirname "$0")/lib.sh"

qemu-img create -q -f qcow2 -o cluster_size=65536 "$T/d.qcow2" 16M
serve_start --disk d="$T/d.qcow2",format=qcow2,cache=writeback --listen unix:"$T/s"
timeout 60 $PY "$HERE/qcow2_sendfile_reuse.py" "$T/s" 20 || fail "held reads changed (see above)"
assert_server_alive
serve_stop
qemu-img check -q -f qcow2 "$T/d.qcow2" || fail "qemu-img check"
echo "test_qcow2_sendfile_reuse: ok"
