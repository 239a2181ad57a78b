#!/usr/bin/python3
"""chain_qmp.py QMP_SOCKET SPEED: block-commit of cow.qcow2 on export/disk d
of a running fleece; waits for BLOCK_JOB_COMPLETED and prints "seconds
guest-write-requests-meanwhile". Used by bench/chain.sh."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../tests/interop/qmp"))
from qmp_client import QmpClient  # noqa: E402


def writes(m):
    return next(e for e in m.ok("query-stats")["exports"] if e["name"] == "d")["write-requests"]


m = QmpClient(sys.argv[1], timeout=600)
m.negotiate()
w0 = writes(m)
t0 = time.monotonic()
m.ok("block-commit", job_id="bench", device="d", top="cow.qcow2", speed=int(sys.argv[2]))
ev = m.event("BLOCK_JOB_COMPLETED")
t1 = time.monotonic()
assert "error" not in ev["data"], ev
print("%.3f %d" % (t1 - t0, writes(m) - w0))
