#!/bin/bash
# Dirty bitmaps: block-dirty-bitmap-add/-remove/-clear/-enable/-disable/
# -merge on a raw and a qcow2 disk; writes, write-zeroes and trims over NBD
# mark exactly their granules, as nbdinfo --map and qemu-img map
# (x-dirty-bitmap) read them from an nbd-server-add export with `bitmaps`;
# query-block's dirty-bitmaps; bad QMP input gets QEMU's error texts and the
# server keeps serving.
. "$(dirname "$0")/lib.sh"

truncate -s 32M "$T/r.img"
qemu-img create -q -f qcow2 "$T/q.qcow2" 32M
serve_start --disk r="$T/r.img" --disk q="$T/q.qcow2",format=qcow2 --listen unix:"$T/s"
timeout 60 $PY "$HERE/qmp/bitmap_map.py" "$T/s" "$T/fleece.qmp"
assert_server_alive
serve_stop
echo "test_bitmap_map: ok"
