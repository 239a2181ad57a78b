#!/bin/bash
# make-pki.sh OUT: test certificates and keys for fleece's TLS, made with
# GnuTLS's certtool and psktool (the tools QEMU's and libvirt's docs use).
#
# OUT/server          --tls-creds for fleece (QEMU layout): ca-cert.pem,
#                     server-cert.pem, server-key.pem (mode 600)
# OUT/client          a client dir for libnbd (tls-certificates=) and
#                     qemu-img (tls-creds-x509 endpoint=client): ca-cert.pem,
#                     client-cert.pem (CN=backup1,O=Example,C=GB), client-key.pem
# OUT/client-other    same CA, DN CN=intruder,O=Example,C=GB (authz deny)
# OUT/client-noca     a client trusting only ca-cert.pem of its own (no client cert)
# OUT/client-rogue    client cert from an unknown CA (CN=backup1,... too)
# OUT/client-expired  client cert from the CA, valid 2001-2002
# OUT/server-rogue    server creds signed by the unknown CA (untrusted by clients)
# OUT/server-expired  server cert valid 2001-2002
# OUT/server-future   server cert valid from 2090
# OUT/server-mismatch server-key.pem of another key
# OUT/server-dh       OUT/server plus dh-params.pem (certtool --get-dh-params)
# OUT/keys.psk        alice and bob (psktool), OUT/alice.psk only alice,
# OUT/wrong.psk       alice with a different key
set -euo pipefail
OUT=${1:?usage: make-pki.sh OUT}
mkdir -p "$OUT"
cd "$OUT"
umask 077

key() { certtool --generate-privkey --key-type=ecdsa --outfile "$1" 2>/dev/null; }
ca() {  # ca NAME CN
  key "$1-key.pem"
  printf 'cn = %s\nca\ncert_signing_key\ncrl_signing_key\nexpiration_days = 3650\n' "$2" >"$1.info"
  certtool --generate-self-signed --load-privkey "$1-key.pem" --template "$1.info" --outfile "$1-cert.pem" 2>/dev/null
}
cert() {  # cert CA OUTPREFIX TEMPLATE-TEXT
  key "$2-key.pem"
  printf '%b' "$3" >"$2.info"
  certtool --generate-certificate --load-privkey "$2-key.pem" --load-ca-certificate "$1-cert.pem" \
    --load-ca-privkey "$1-key.pem" --template "$2.info" --outfile "$2-cert.pem" 2>/dev/null
}

ca ca "fleece test CA"
ca rogue "rogue CA"
SERVER='organization = fleece test\ncn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\nip_address = ::1\ntls_www_server\nencryption_key\nsigning_key\n'
CLIENT='country = GB\norganization = Example\ntls_www_client\nencryption_key\nsigning_key\n'
cert ca srv "${SERVER}expiration_days = 3650\n"
cert rogue srv-rogue "${SERVER}expiration_days = 3650\n"
cert ca srv-expired "${SERVER}activation_date = \"2001-01-01 00:00:00\"\nexpiration_date = \"2002-01-01 00:00:00\"\n"
cert ca srv-future "${SERVER}activation_date = \"2090-01-01 00:00:00\"\nexpiration_date = \"2091-01-01 00:00:00\"\n"
cert ca cli "${CLIENT}cn = backup1\nexpiration_days = 3650\n"
cert ca cli-other "${CLIENT}cn = intruder\nexpiration_days = 3650\n"
cert rogue cli-rogue "${CLIENT}cn = backup1\nexpiration_days = 3650\n"
cert ca cli-expired "${CLIENT}cn = backup1\nactivation_date = \"2001-01-01 00:00:00\"\nexpiration_date = \"2002-01-01 00:00:00\"\n"
key other-key.pem

server_dir() {  # server_dir DIR CA PREFIX
  mkdir -p "$1"
  cp "$2-cert.pem" "$1/ca-cert.pem"
  cp "$3-cert.pem" "$1/server-cert.pem"
  cp "$3-key.pem" "$1/server-key.pem"
}
client_dir() {  # client_dir DIR CA [PREFIX]
  mkdir -p "$1"
  cp "$2-cert.pem" "$1/ca-cert.pem"
  if [[ -n ${3:-} ]]; then
    cp "$3-cert.pem" "$1/client-cert.pem"
    cp "$3-key.pem" "$1/client-key.pem"
  fi
}
server_dir server ca srv
server_dir server-rogue rogue srv-rogue
server_dir server-expired ca srv-expired
server_dir server-future ca srv-future
server_dir server-mismatch ca srv
server_dir server-dh ca srv
certtool --get-dh-params --outfile server-dh/dh-params.pem 2>/dev/null
cp other-key.pem server-mismatch/server-key.pem
client_dir client ca cli
client_dir client-other ca cli-other
client_dir client-rogue ca cli-rogue
client_dir client-expired ca cli-expired
client_dir client-noca ca

psktool -u alice -p keys.psk >/dev/null
psktool -u bob -p keys.psk >/dev/null
grep '^alice:' keys.psk >alice.psk
psktool -u alice -p wrong.psk >/dev/null
chmod -R go-rwx "$OUT"
