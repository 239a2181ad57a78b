#!/bin/bash
# block-commit of cow.qcow2 into master.img under fio writes (the issue's scenario).
# The test is tests/interop/qmp/chain_commit.py (it starts its own server).
set -euo pipefail
exec timeout 90 /usr/bin/python3 "$(dirname "$0")/qmp/chain_commit.py"
