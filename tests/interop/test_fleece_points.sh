#!/bin/bash
# Fleeces at three points in time under a running writer, and disk groups:
# every frozen view exact and one instant, group members never out of order,
# qemu-img reads each store (through its backing chain) as its view while the
# fleece lives, fleece-stop deletes the stores, the live disks hold exactly
# the writes (fleece_points.py has the details).
. "$(dirname "$0")/lib.sh"

make_image "$T/d.img" 32 3
make_image "$T/ga.img" 4 4
make_image "$T/gb.img" 4 5
mkdir "$T/stores"
serve_start --disk d="$T/d.img" --disk ga="$T/ga.img" --disk gb="$T/gb.img" \
  --listen unix:"$T/s" --store-dir "$T/stores"
timeout 60 $PY "$HERE/fleece_points.py" "$T/s" "$T/fleece.qmp" "$T/stores"
assert_server_alive
serve_stop
[[ -z $(ls -A "$T/stores") ]] || fail "store dir not empty after stop: $(ls "$T/stores")"
echo "test_fleece_points: ok"
