#!/bin/bash
# Incremental backup end to end: fleece-start f1 freezes bitmap `inc` with
# the snapshot; nbdcopy of vd@f1 is the full backup; after more writes,
# fleece-start f2 freezes it again while a writer runs; only the dirty
# extents of vd@f2 (qemu:dirty-bitmap:inc) are copied, and full +
# incremental equals the disk at f2 (checksums). The writer's writes are each
# in exactly one of the frozen and the new bitmap. A failed backup's bitmap
# merges back (block-dirty-bitmap-merge); fleece-start's bitmap errors.
. "$(dirname "$0")/lib.sh"

qemu-img create -q -f qcow2 "$T/vd.qcow2" 64M
serve_start --disk vd="$T/vd.qcow2",format=qcow2 --listen unix:"$T/s"
timeout 90 $PY "$HERE/qmp/bitmap_incremental.py" "$T/s" "$T/fleece.qmp" "$T"
assert_server_alive
serve_stop
qemu-img check -q "$T/vd.qcow2" || fail "qemu-img check of the disk"
qemu-img info "$T/vd.qcow2" | grep -q "name: inc$" || fail "persistent bitmap inc not stored"
echo "test_bitmap_incremental: ok"
