#!/bin/bash
# TLS-PSK (psktool keys) with GnuTLS clients: libnbd's tls-psk-file and
# qemu-img's tls-creds-psk; wrong key, unknown identity and an identity not
# in --tls-authz are refused while a good client is served.
. "$(dirname "$0")/../lib.sh"

PKI=$T/pki
bash "$HERE/tls/make-pki.sh" "$PKI"
make_image "$T/disk.raw" 8 5
SOCK=$T/nbd.sock
PORT=$(free_port)
serve_start --disk disk="$T/disk.raw" --listen unix:"$SOCK" --listen tcp:127.0.0.1:"$PORT" \
  --tls require --tls-psk "$PKI/keys.psk" --tls-authz alice

# The PSK identity is the URI's user (libnbd 1.14 has no tls-username= parameter).
uri() { echo "nbds+unix://$2@/disk?socket=$SOCK&tls-psk-file=$1"; }

log "libnbd with tls-psk-file: nbdinfo, nbdcopy (unix and tcp)"
nbdinfo "$(uri "$PKI/alice.psk" alice)" | grep -q 'with TLS' || fail "nbdinfo with PSK failed"
nbdcopy "$(uri "$PKI/keys.psk" alice)" "$T/copy.raw"
[[ $(sha "$T/copy.raw") == $(sha "$T/disk.raw") ]] || fail "nbdcopy with PSK: bytes differ"
nbdcopy "nbds://alice@127.0.0.1:$PORT/disk?tls-psk-file=$PKI/alice.psk" "$T/copy-tcp.raw"
[[ $(sha "$T/copy-tcp.raw") == $(sha "$T/disk.raw") ]] || fail "nbdcopy with PSK over TCP: bytes differ"
grep -q "TLS established with psk 'alice' (TLSv1.3" "$SERVER_LOG" || fail "PSK identity / TLS 1.3 not logged"

log "qemu-img with tls-creds-psk"
mkdir "$T/qpsk" && cp "$PKI/alice.psk" "$T/qpsk/keys.psk"
qemu-img convert --object "tls-creds-psk,id=tls0,dir=$T/qpsk,username=alice,endpoint=client" -O raw \
  --image-opts "driver=nbd,server.type=unix,server.path=$SOCK,export=disk,tls-creds=tls0" "$T/qemu.raw"
[[ $(sha "$T/qemu.raw") == $(sha "$T/disk.raw") ]] || fail "qemu-img with PSK: bytes differ"
qemu-img compare --object "tls-creds-psk,id=tls0,dir=$T/qpsk,username=alice,endpoint=client" -f raw "$T/disk.raw" \
  "json:{\"driver\":\"nbd\",\"server.type\":\"inet\",\"server.host\":\"127.0.0.1\",\"server.port\":\"$PORT\",\"export\":\"disk\",\"tls-creds\":\"tls0\"}" \
  >/dev/null || fail "qemu-img compare with PSK found a difference"

refused() {  # refused URI LOGPATTERN
  nbdcopy "$(uri "$PKI/alice.psk" alice)" "$T/during.raw" &
  local copy=$!
  if nbdinfo --size "$1" >"$T/refused.out" 2>&1; then fail "served: $1"; fi
  wait "$copy" || fail "the good client failed beside a refused one"
  [[ $(sha "$T/during.raw") == $(sha "$T/disk.raw") ]] || fail "good client got wrong bytes"
  grep -q -- "$2" "$SERVER_LOG" || fail "no log line '$2'"
}
log "wrong key"
refused "$(uri "$PKI/wrong.psk" alice)" "binder does not verify"
log "unknown identity"
sed 's/^alice:/mallory:/' "$PKI/alice.psk" >"$T/mallory.psk"
refused "$(uri "$T/mallory.psk" mallory)" "PSK identity 'mallory' is not in --tls-psk"
log "identity with a key but not in --tls-authz"
refused "$(uri "$PKI/keys.psk" bob)" "refused psk 'bob': 'bob' is not in --tls-authz"
assert_server_alive
serve_stop

log "bad PSK files stop the start with the line named"
printf 'alice:abc\n' >"$T/odd.psk"
if out=$(timeout 20 "$FLEECE" serve --disk disk="$T/disk.raw" --listen unix:"$T/x.sock" --qmp unix:"$T/x.qmp" \
  --tls-psk "$T/odd.psk" 2>&1); then fail "started with a bad PSK file"; fi
grep -q "line 1: key of 'alice' has an odd number of hex digits" <<<"$out" || fail "unexpected: $out"
log "ok"
