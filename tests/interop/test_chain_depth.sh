#!/bin/bash
# qemu:allocation-depth against qemu-nbd -A and qemu-img map.
# The test is tests/interop/qmp/chain_depth.py (it starts its own server).
set -euo pipefail
exec timeout 90 /usr/bin/python3 "$(dirname "$0")/qmp/chain_depth.py"
