#!/bin/bash
# The embedding API through the example host (examples/host/host.cpp), in
# both ways to run an Engine (its own threads; the host's io_context):
#  * the pattern the host wrote in-process is what nbdcopy reads over NBD;
#  * writes an NBD client made (unaligned, FUA, zeroes, several places) are
#    what the host then reads in-process (its SIGUSR1 dump);
#  * SIGTERM exits 0, the file holds every write, the socket file is gone.
. "$(dirname "$0")/lib.sh"

HOST=${FLEECE_EXAMPLE_HOST:-${FLEECE_BUILD_DIR:-$HERE/../../build-embed}/examples/fleece_example_host}
[[ -x $HOST ]] || fail "example host not found at $HOST (built by the examples/ target fleece_example_host)"

# The host's pattern: 4096-byte block i is "block %08x fleece\n" % i, repeated, cut at 4096.
make_expected() {
  $PY - "$1" "$2" <<'EOF'
import sys
path, size = sys.argv[1], int(sys.argv[2])
with open(path, "wb") as f:
    for i in range((size + 4095) // 4096):
        line = b"block %08x fleece\n" % i
        f.write((line * (4096 // len(line) + 1))[:min(4096, size - i * 4096)])
EOF
}

# wait_line FILE LINE COUNT: until FILE holds LINE at least COUNT times (bounded).
wait_line() {
  local i
  for ((i = 0; i < 300; i++)); do
    (($(grep -cx "$2" "$1" 2>/dev/null || true) >= $3)) && return 0
    kill -0 "$TIMEOUT_PID" 2>/dev/null || fail "host exited while waiting for '$2'"
    sleep 0.1
  done
  fail "no '$2' from the host within 30 s"
}

SIZE=$((16 << 20))
make_expected "$T/expected.img" $SIZE

for mode in threads io-context; do
  flags=()
  [[ $mode == io-context ]] && flags=(--io-context)
  rm -f "$T/disk.img" "$T/disk.img.dump" "$T/host.out"
  truncate -s $SIZE "$T/disk.img"
  cp "$T/expected.img" "$T/want.img"
  : >"$SERVER_LOG"

  timeout 120 "$HOST" "${flags[@]}" "$T/s" "$T/disk.img" >"$T/host.out" 2>>"$SERVER_LOG" &
  TIMEOUT_PID=$!
  wait_line "$T/host.out" "host: ready" 1
  SERVER_PID=$(pgrep -P "$TIMEOUT_PID" | head -n1)
  [[ -n $SERVER_PID ]] || fail "$mode: host exited right after ready"
  uri="nbd+unix:///vda?socket=$T/s"

  # 1. What the host wrote in-process, read by a real NBD client.
  nbdcopy "$uri" "$T/read.img"
  [[ $(sha "$T/read.img") == $(sha "$T/want.img") ]] || fail "$mode: export differs from the host's pattern"
  log "$mode: nbdcopy reads the host's pattern"

  # 2. An NBD client writes; the same writes go into want.img.
  $PY - "$T/s" "$T/want.img" <<'EOF'
import sys, nbd
sock, want = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.set_export_name("vda")
h.connect_unix(sock)
assert not h.is_read_only()
writes = [
    (12345, b"guest-visible bytes from an NBD client " * 3, 0),   # unaligned
    (8 << 20, bytes(range(256)) * 256, nbd.CMD_FLAG_FUA),         # 64 KiB, FUA
    ((16 << 20) - 100, b"z" * 100, 0),                           # the very end
]
with open(want, "r+b") as f:
    for off, data, flags in writes:
        h.pwrite(data, off, flags)
        f.seek(off); f.write(data)
    h.zero(1 << 20, 3 << 20)
    f.seek(3 << 20); f.write(bytes(1 << 20))
h.flush()
h.shutdown()
EOF

  # 3. The host reads its disk in-process and dumps it.
  kill -USR1 "$SERVER_PID"
  wait_line "$T/host.out" "host: dumped" 1
  [[ $(sha "$T/disk.img.dump") == $(sha "$T/want.img") ]] || fail "$mode: the host does not read what the NBD client wrote"
  log "$mode: the host reads the NBD client's writes"

  # 4. SIGTERM: clean exit, every write in the file, no socket left behind.
  kill -TERM "$SERVER_PID"
  wait "$TIMEOUT_PID" && rc=0 || rc=$?
  SERVER_PID=
  ((rc == 0)) || fail "$mode: host exited with status $rc after SIGTERM"
  grep -qx "host: stopped" "$T/host.out" || fail "$mode: no 'host: stopped' line"
  [[ ! -e $T/s ]] || fail "$mode: socket file left behind"
  [[ $(sha "$T/disk.img") == $(sha "$T/want.img") ]] || fail "$mode: file differs after stop"
  log "$mode: SIGTERM exits 0, file complete"
done
echo "test_embed: ok"
