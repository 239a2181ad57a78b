#!/bin/bash
# --handshake-timeout: idle clients are dropped; --max-connections: the
# connection over the limit is closed while the first ones keep working.
. "$(dirname "$0")/lib.sh"

truncate -s 4M "$T/d.img"
serve_start --disk d="$T/d.img" --listen unix:"$T/s" --handshake-timeout 2 --max-connections 2

HERE=$HERE $PY - "$T/s" "${PEER:-fleece}" <<'PYEOF'
import os, sys, time
sys.path.insert(0, os.environ["HERE"])
from nbdraw import Closed, Raw
sock, peer = sys.argv[1], sys.argv[2]

if peer == "fleece":   # qemu 7.2 has no handshake timeout option
    # Idle before sending anything, and idle in the middle of option haggling.
    for stage in ("silent", "after-flags"):
        r = Raw(sock)
        r.greeting()
        if stage == "after-flags":
            r.client_flags()
        t0 = time.monotonic()
        assert r.wait_closed(8), f"{stage}: idle client not dropped within 8 s"
        dt = time.monotonic() - t0
        assert 1.0 <= dt <= 6.0, f"{stage}: dropped after {dt:.1f} s, want about 2 s"
        print(f"handshake timeout ({stage}): dropped after {dt:.1f} s")
    time.sleep(0.3)  # let the server account for the closed connections

# A client in transmission is not subject to the handshake timeout.
a, b = Raw(sock), Raw(sock)
a.connect_export("d")
b.connect_export("d")
time.sleep(3)
c = Raw(sock, timeout=5)
closed = False
try:
    c.greeting()
    c.client_flags()
    c.go("d")
except (Closed, ConnectionError) as e:
    closed = True
    print(f"third connection closed: {e!r}")
except TimeoutError:
    raise AssertionError("third connection neither served nor closed within 5 s")
assert closed, "third connection was served beyond --max-connections 2"
for r, tag in ((a, b"A"), (b, b"B")):
    assert r.write(0 if tag == b"A" else 4096, tag * 4096) == 0, "write on an admitted connection"
err, data = a.read(0, 8192)
assert err == 0 and data == b"A" * 4096 + b"B" * 4096, "admitted connections lost data"
# Once one leaves, a new client gets in.
b.close()
time.sleep(0.5)
d = Raw(sock)
d.connect_export("d")
err, data = d.read(4096, 4096)
assert err == 0 and data == b"B" * 4096
print("limits ok")
PYEOF
serve_stop
echo "test_limits: ok"
