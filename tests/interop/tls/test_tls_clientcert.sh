#!/bin/bash
# --tls-verify-peer and --tls-authz by DN: clients with a certificate from the
# CA whose DN is allowed are served (libnbd and qemu-img); no certificate, a
# certificate from another CA, an expired one, or a DN not in the list are
# refused with a log line naming the peer.
. "$(dirname "$0")/../lib.sh"

PKI=$T/pki
bash "$HERE/tls/make-pki.sh" "$PKI"
make_image "$T/disk.raw" 8 3
SOCK=$T/nbd.sock
PORT=$(free_port)
serve_start --disk disk="$T/disk.raw" --listen unix:"$SOCK" --listen tcp:127.0.0.1:"$PORT" \
  --tls-creds "$PKI/server" --tls-verify-peer --tls-authz 'CN=backup*,O=Example,C=GB'

uri() { echo "nbds://127.0.0.1:$PORT/disk?tls-certificates=$PKI/$1"; }

log "allowed client certificate: nbdcopy and qemu-img"
nbdcopy "$(uri client)" "$T/copy.raw"
[[ $(sha "$T/copy.raw") == $(sha "$T/disk.raw") ]] || fail "nbdcopy with a client certificate: bytes differ"
grep -q "TLS established with x509 'CN=backup1,O=Example,C=GB'" "$SERVER_LOG" || fail "peer DN not logged"
qemu-img convert --object "tls-creds-x509,id=tls0,dir=$PKI/client,endpoint=client" -O raw \
  --image-opts "driver=nbd,server.type=unix,server.path=$SOCK,export=disk,tls-creds=tls0,tls-hostname=localhost" \
  "$T/qemu.raw"
[[ $(sha "$T/qemu.raw") == $(sha "$T/disk.raw") ]] || fail "qemu-img with a client certificate: bytes differ"

refused() {  # refused DIR LOGPATTERN
  nbdcopy "$(uri client)" "$T/during.raw" &
  local copy=$!
  if nbdinfo --size "$(uri "$1")" >"$T/refused.out" 2>&1; then fail "client '$1' was served"; fi
  wait "$copy" || fail "the good client failed beside '$1'"
  [[ $(sha "$T/during.raw") == $(sha "$T/disk.raw") ]] || fail "good client got wrong bytes beside '$1'"
  grep -q -- "$2" "$SERVER_LOG" || fail "no log line '$2' for client '$1'"
}
log "no client certificate"
refused client-noca "peer did not return a certificate"
log "client certificate from another CA"
# GnuTLS sends no certificate the server's CA list does not name; either way it is refused.
refused client-rogue "peer did not return a certificate\|certificate verify failed"
log "expired client certificate"
refused client-expired "certificate verify failed (SSL routines) (certificate has expired)"
log "DN not in --tls-authz"
refused client-other "refused x509 'CN=intruder,O=Example,C=GB': 'CN=intruder,O=Example,C=GB' is not in --tls-authz"
assert_server_alive
serve_stop

log "--tls-verify-peer needs the CA"
mkdir "$T/noca" && cp "$PKI/server/server-"*.pem "$T/noca/"
if out=$(timeout 20 "$FLEECE" serve --disk disk="$T/disk.raw" --listen unix:"$T/x.sock" --qmp unix:"$T/x.qmp" \
  --tls-creds "$T/noca" --tls-verify-peer 2>&1); then fail "started without ca-cert.pem under --tls-verify-peer"; fi
grep -q "ca-cert.pem': no such file; it is needed to check client certificates" <<<"$out" || fail "unexpected: $out"
log "ok"
