#!/bin/bash
# TLS with X.509 certificates: nbdinfo, nbdcopy and qemu-img over nbds+unix://
# and nbds://, --tls require and --tls on, and every way a client is refused
# (plaintext, untrusted CA, garbage after STARTTLS, a stalled handshake)
# while a good client keeps being served. Also: start-up errors of the
# binary and a certificate reload on SIGHUP.
. "$(dirname "$0")/../lib.sh"

PKI=$T/pki
bash "$HERE/tls/make-pki.sh" "$PKI"
make_image "$T/disk.raw" 16 7
SOCK=$T/nbd.sock
PORT=$(free_port)
CREDS=$T/creds
cp -r "$PKI/server" "$CREDS"

serve_start --disk disk="$T/disk.raw" --listen unix:"$SOCK" --listen tcp:127.0.0.1:"$PORT" \
  --tls require --tls-creds "$CREDS" --handshake-timeout 2
UNIX_URI="nbds+unix:///disk?socket=$SOCK&tls-certificates=$PKI/client"
TCP_URI="nbds://127.0.0.1:$PORT/disk?tls-certificates=$PKI/client"

log "nbdinfo over TLS (unix and tcp)"
nbdinfo "$UNIX_URI" >"$T/info" || fail "nbdinfo over nbds+unix failed"
grep -q 'with TLS' "$T/info" || fail "nbdinfo did not report TLS: $(cat "$T/info")"
grep -q 'export-size: 16777216' "$T/info" || fail "wrong size: $(cat "$T/info")"
nbdinfo --size "$TCP_URI" | grep -qx 16777216 || fail "nbdinfo over nbds:// failed"

log "nbdcopy over TLS: exact bytes"
nbdcopy "$UNIX_URI" "$T/copy-unix.raw"
[[ $(sha "$T/copy-unix.raw") == $(sha "$T/disk.raw") ]] || fail "nbdcopy over nbds+unix: bytes differ"
nbdcopy "$TCP_URI" "$T/copy-tcp.raw"
[[ $(sha "$T/copy-tcp.raw") == $(sha "$T/disk.raw") ]] || fail "nbdcopy over nbds://: bytes differ"

log "qemu-img convert / compare with tls-creds-x509"
QOBJ="tls-creds-x509,id=tls0,dir=$PKI/client,endpoint=client"
qemu-img convert --object "$QOBJ" -O raw \
  --image-opts "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$PORT,export=disk,tls-creds=tls0" \
  "$T/qemu.raw"
[[ $(sha "$T/qemu.raw") == $(sha "$T/disk.raw") ]] || fail "qemu-img convert over TLS: bytes differ"
qemu-img compare --object "$QOBJ" -f raw "$T/disk.raw" \
  "json:{\"driver\":\"nbd\",\"server.type\":\"unix\",\"server.path\":\"$SOCK\",\"export\":\"disk\",\"tls-creds\":\"tls0\",\"tls-hostname\":\"localhost\"}" \
  >/dev/null || fail "qemu-img compare over TLS found a difference"

log "writes over TLS: nbdcopy into the export, qemu-io with a pattern; exact bytes back"
make_image "$T/new.raw" 16 11
nbdcopy "$T/new.raw" "$UNIX_URI"
nbdcopy "$TCP_URI" "$T/back.raw"
[[ $(sha "$T/back.raw") == $(sha "$T/new.raw") ]] || fail "nbdcopy writes over TLS: bytes read back differ"
[[ $(sha "$T/disk.raw") == $(sha "$T/new.raw") ]] || fail "nbdcopy writes over TLS: the disk file differs"
qemu-io --object "$QOBJ" --image-opts \
  "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$PORT,export=disk,tls-creds=tls0" \
  -c "write -P 0x5a 1M 3M" -c "write -P 0xa5 7340544 1000" -c "read -P 0x5a 1M 3M" -c "read -P 0xa5 7340544 1000" \
  >"$T/qio.out" 2>&1 || fail "qemu-io over TLS failed: $(cat "$T/qio.out")"
grep -q "Pattern verification failed" "$T/qio.out" && fail "qemu-io over TLS read back other bytes"
cp "$T/new.raw" "$T/expect.raw"
$PY - "$T/expect.raw" <<'PYEOF'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(1 << 20); f.write(b"\x5a" * (3 << 20))
    f.seek(7340544); f.write(b"\xa5" * 1000)
PYEOF
[[ $(sha "$T/disk.raw") == $(sha "$T/expect.raw") ]] || fail "qemu-io writes over TLS: the disk file differs"

log "plaintext client against --tls require: refused with TLS_REQD"
if LIBNBD_DEBUG=1 nbdinfo "nbd+unix:///disk?socket=$SOCK" >"$T/plain.out" 2>&1; then
  fail "a plaintext client was served under --tls require"
fi
grep -q 'TLS required' "$T/plain.out" || fail "no TLS-required message: $(tail -5 "$T/plain.out")"
if qemu-img info --image-opts "driver=nbd,server.type=unix,server.path=$SOCK,export=disk" >"$T/qplain" 2>&1; then
  fail "qemu-img without TLS was served under --tls require"
fi

log "a client that trusts another CA refuses fleece (TCP: libnbd checks the server)"
if nbdinfo "nbds://127.0.0.1:$PORT/disk?tls-certificates=$PKI/server-rogue" >"$T/rogue.out" 2>&1; then
  fail "a client trusting another CA accepted the server"
fi
grep -qi 'certificate\|verif\|TLS' "$T/rogue.out" || fail "unexpected error: $(cat "$T/rogue.out")"
if qemu-img info --object "tls-creds-x509,id=tls0,dir=$PKI/server-rogue,endpoint=client" \
  --image-opts "driver=nbd,server.type=unix,server.path=$SOCK,export=disk,tls-creds=tls0,tls-hostname=localhost" \
  >"$T/qrogue" 2>&1; then
  fail "qemu-img trusting another CA accepted the server"
fi
grep -q 'known issuer' "$T/qrogue" || fail "unexpected qemu-img error: $(cat "$T/qrogue")"

log "the TLS session ends with close_notify after NBD_CMD_DISC"
$PY "$HERE/tls/close_notify.py" "$SOCK" disk "$PKI/client" "$T/disk.raw" || fail "no close_notify at the end of the session"

log "hostile clients are dropped while a good one is served"
nbdcopy "$UNIX_URI" "$T/during.raw" &
COPY=$!
$PY "$HERE/tls/starttls_raw.py" "$SOCK" garbage 3 || fail "garbage after the STARTTLS ACK was not dropped"
$PY "$HERE/tls/starttls_raw.py" "$SOCK" stall 4.5 || fail "a stalled TLS handshake was not dropped by the timeout"
wait "$COPY" || fail "the good client failed beside the hostile ones"
[[ $(sha "$T/during.raw") == $(sha "$T/disk.raw") ]] || fail "good client got wrong bytes"
grep -q 'TLS handshake failed' "$SERVER_LOG" || fail "no log line for the failed handshake"
grep -q 'handshake timed out\|TLS handshake not finished' "$SERVER_LOG" || fail "no log line for the stalled client"
assert_server_alive

log "SIGHUP reloads the certificates for new connections"
cp "$PKI/server-rogue/"*.pem "$CREDS/"
kill -HUP "$SERVER_PID"
for i in $(seq 50); do grep -q 'credentials generation 2' "$SERVER_LOG" && break; sleep 0.1; done
grep -q 'credentials generation 2' "$SERVER_LOG" || fail "no reload after SIGHUP"
nbdinfo --size "nbds://127.0.0.1:$PORT/disk?tls-certificates=$PKI/server-rogue" >/dev/null ||
  fail "the reloaded certificate is not used"
if nbdinfo --size "$TCP_URI" >/dev/null 2>&1; then fail "the old certificate is still used after reload"; fi
cp "$PKI/other-key.pem" "$CREDS/server-key.pem"
kill -HUP "$SERVER_PID"
for i in $(seq 50); do grep -q 'reload failed' "$SERVER_LOG" && break; sleep 0.1; done
grep -q 'reload failed, keeping the current credentials: server key .* does not match' "$SERVER_LOG" ||
  fail "a broken reload was not reported"
nbdinfo --size "nbds://127.0.0.1:$PORT/disk?tls-certificates=$PKI/server-rogue" >/dev/null ||
  fail "a failed reload dropped the working certificate"
serve_stop

log "--tls on: plaintext and TLS clients are both served"
serve_start --disk disk="$T/disk.raw" --listen unix:"$SOCK" --tls on --tls-creds "$PKI/server"
nbdinfo --size "nbd+unix:///disk?socket=$SOCK" | grep -qx 16777216 || fail "plaintext client refused under --tls on"
nbdinfo "$UNIX_URI" | grep -q 'with TLS' || fail "TLS client not upgraded under --tls on"
serve_stop

log "READ data in flight under TLS is bounded: peak RSS with 4 pipelining clients"
head -c 128M /dev/urandom >"$T/big.raw"  # all data: nbdcopy reads every byte
serve_start --disk big="$T/big.raw" --listen unix:"$SOCK" --tls require --tls-creds "$PKI/server"
# To null: the client takes as fast as it can decrypt, so every READ it may
# pipeline is in flight. With 64 MiB per connection allowed (4 x 64 READs
# x 256 KiB), the server peaked at ~42 MiB here; with at most 8 MiB per TLS
# connection waiting to be sealed, at ~21 MiB.
nbdcopy --connections=4 --requests=64 "nbds+unix:///big?socket=$SOCK&tls-certificates=$PKI/client" null:
hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER_PID/status")
log "server peak RSS: $hwm KiB"
((hwm < 32 * 1024)) || fail "server peak RSS $hwm KiB: more READ data in flight than 8 MiB per TLS connection"
serve_stop
rm -f "$T/big.raw"

log "start-up errors name the file"
expect_startup_error() {  # expect_startup_error PATTERN ARGS...
  local pattern=$1; shift
  local out
  if out=$(timeout 20 "$FLEECE" serve --disk disk="$T/disk.raw" --listen unix:"$T/x.sock" --qmp unix:"$T/x.qmp" "$@" 2>&1); then
    fail "fleece started with $*"
  fi
  grep -q -- "$pattern" <<<"$out" || fail "expected '$pattern' for $*, got: $out"
  [[ ! -e $T/x.sock ]] || fail "a socket was left behind after a start-up error"
}
expect_startup_error "expired on 2002-01-01" --tls-creds "$PKI/server-expired"
expect_startup_error "not valid before 2090-01-01" --tls-creds "$PKI/server-future"
expect_startup_error "does not match server certificate" --tls-creds "$PKI/server-mismatch"
expect_startup_error "no such directory" --tls-creds "$T/nonexistent"
mkdir "$T/nokey" && cp "$PKI/server/server-cert.pem" "$T/nokey/"
expect_startup_error "server-key.pem': no such file" --tls-creds "$T/nokey"
expect_startup_error "needs credentials" --tls require
log "ok"
