#!/bin/bash
# Fleecing a large sparse disk: how long fleece-start and fleece-stop take
# and how long a guest writing all along waits meanwhile, the memory a point
# in time costs, and nbdinfo --map of a frozen view, beside
# qemu-storage-daemon's copy-before-write + snapshot-access graph over the
# same disk (qsd has no live start or stop to time: its graph is built at
# start-up here).
#
#   bench/fleece_scale.sh            1 TiB disk, 256 MiB of it data
#   QUICK=1 bench/fleece_scale.sh    64 GiB, 32 MiB of data
#   FLEECE=path bench/fleece_scale.sh
set -euo pipefail

. "$(dirname "$0")/preamble.sh"
bench_work
find_fleece
if [[ -n $QUICK ]]; then SIZE=64G DATA_MIB=32; else SIZE=1T DATA_MIB=256; fi

echo
echo "fleece $FLEECE (tree $(git -C "$SRC" describe --always --dirty 2>/dev/null || echo '?')), disk $SIZE sparse" \
  "with $DATA_MIB MiB of data, $(qemu-storage-daemon --version | head -1), $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
/usr/bin/python3 "$HERE/fleece_scale.py" "$FLEECE" "$WORK" "$SIZE" "$DATA_MIB"
