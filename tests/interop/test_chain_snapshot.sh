#!/bin/bash
# blockdev-snapshot-sync under writes: the new overlay is the active layer.
# The test is tests/interop/qmp/chain_snapshot.py (it starts its own server).
set -euo pipefail
exec timeout 90 /usr/bin/python3 "$(dirname "$0")/qmp/chain_snapshot.py"
