#!/bin/bash
# A fleece taken before a block-commit stays exact through it.
# The test is tests/interop/qmp/chain_fleece.py (it starts its own server).
set -euo pipefail
exec timeout 90 /usr/bin/python3 "$(dirname "$0")/qmp/chain_fleece.py"
