#!/bin/bash
# chain command refusals, block-job pause/resume/set-speed/cancel, a job at shutdown.
# The test is tests/interop/qmp/chain_jobs.py (it starts its own server).
set -euo pipefail
exec timeout 90 /usr/bin/python3 "$(dirname "$0")/qmp/chain_jobs.py"
