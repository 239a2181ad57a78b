#!/bin/bash
# SIGTERM while many writes are in flight: the server finishes them, flushes,
# exits 0, and every acknowledged write is on disk.
. "$(dirname "$0")/lib.sh"

truncate -s 64M "$T/d.img"
serve_start --disk d="$T/d.img" --listen unix:"$T/s"

$PY - "$T/s" "$SERVER_PID" "$T/acked.json" <<'PYEOF'
import json, os, signal, sys, time, nbd
sock, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
hs = []
for _ in range(2):
    h = nbd.NBD(); h.set_export_name("d"); h.connect_unix(sock); hs.append(h)
pending = {}   # (handle index, cookie) -> (offset, data)
acked = {}
failed = 0
reasons = {}
off = 0
sent_term = False
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    for i, h in enumerate(hs):
        # Keep 32 writes in flight per connection until SIGTERM, then drain.
        while not sent_term and h.aio_in_flight() < 32 and off < (64 << 20):
            data = os.urandom(65536)
            pending[(i, h.aio_pwrite(data, off))] = (off, data)
            off += 65536
        try:
            h.poll(1 if h.aio_in_flight() else 0)
        except nbd.Error:
            pass
        for (j, ck) in [k for k in pending if k[0] == i]:
            try:
                if h.aio_command_completed(ck):
                    o, d = pending.pop((j, ck))
                    acked[str(o)] = d.hex()
            except nbd.Error as e:
                failed += 1       # e.g. ESHUTDOWN, or the connection closed
                reasons[e.string] = reasons.get(e.string, 0) + 1
                pending.pop((j, ck))
    if not sent_term and len(acked) >= 200:
        os.kill(pid, signal.SIGTERM)
        sent_term = True
        print(f"SIGTERM with {sum(h.aio_in_flight() for h in hs)} writes in flight")
    if sent_term and not pending:
        break
    if sent_term and all(h.aio_is_closed() or h.aio_is_dead() for h in hs):
        failed += len(pending)
        break
assert sent_term, "never got 200 writes acknowledged"
print(f"{len(acked)} writes acknowledged, {failed} not: {reasons}")
json.dump(acked, open(out, "w"))
PYEOF

# The server exits by itself (status 0) after SIGTERM.
for ((i = 0; i < 300; i++)); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$SERVER_PID" 2>/dev/null && fail "server still running 30 s after SIGTERM"
wait "$TIMEOUT_PID" && rc=0 || rc=$?
SERVER_PID=
((rc == 0)) || fail "server exit status $rc after SIGTERM"

$PY - "$T/d.img" "$T/acked.json" <<'PYEOF'
import json, sys
disk = open(sys.argv[1], "rb").read()
acked = json.load(open(sys.argv[2]))
bad = [o for o, d in acked.items() if disk[int(o):int(o) + len(d) // 2] != bytes.fromhex(d)]
assert not bad, f"{len(bad)} acknowledged writes missing on disk, first at {min(map(int, bad))}"
print(f"all {len(acked)} acknowledged writes on disk")
PYEOF
echo "test_sigterm: ok"
