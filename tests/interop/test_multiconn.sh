#!/bin/bash
# Multi-conn: write on connection A, flush on B, read on C sees the data;
# FUA on one connection is visible on another; zero and trim across connections.
. "$(dirname "$0")/lib.sh"

truncate -s 16M "$T/d.img"
serve_start --disk d="$T/d.img" --listen unix:"$T/s"

$PY - "$T/s" <<'PYEOF'
import os, sys, nbd
sock = sys.argv[1]
def conn():
    h = nbd.NBD()
    h.set_export_name("d")
    h.connect_unix(sock)
    return h
a, b, c = conn(), conn(), conn()
for h in (a, b, c):
    assert h.can_multi_conn(), "CAN_MULTI_CONN not advertised"
    assert h.can_flush() and h.can_fua()

for i in range(32):
    data = os.urandom(65536)
    off = i * 327680
    a.pwrite(data, off)
    b.flush()
    assert c.pread(len(data), off) == data, f"round {i}: C did not see A's write after B's flush"
# FUA write on C is visible on A without a flush.
data = os.urandom(4096)
c.pwrite(data, 12 << 20, nbd.CMD_FLAG_FUA)
assert a.pread(4096, 12 << 20) == data
# Zero on B, read on A.
b.zero(65536, 0)
assert a.pread(65536, 0) == bytes(65536)
# Many writes in flight on A (async), flush on B afterwards, read on C.
blocks = {}
cookies = []
for i in range(64):
    d = os.urandom(4096)
    off = (8 << 20) + i * 8192
    blocks[off] = d
    cookies.append(a.aio_pwrite(d, off))
while a.aio_in_flight() > 0:
    a.poll(-1)
assert all(a.aio_command_completed(ck) for ck in cookies)
b.flush()
for off, d in blocks.items():
    assert c.pread(4096, off) == d, f"async write at {off} not seen"
for h in (a, b, c):
    h.shutdown()
print("multiconn ok")
PYEOF
serve_stop
echo "test_multiconn: ok"
