#!/bin/bash
# What bounds TLS streaming on this machine: nbdcopy over TLS from fleece
# and qemu-nbd with the server's threads pinned to CPU 0 and nbdcopy to
# CPU 1, so each side's CPU per GiB is measured apart from the other's.
# Prints, per server and connection count, the throughput, nbdcopy's CPU
# per GiB of image and how busy its core was, the server's CPU per GiB; the
# bound those figures put on any server when client and server share the
# machine's cores: cores / (client CPU per GiB + AES-GCM CPU per GiB), the
# cipher's cost (`openssl speed`) being the least any TLS server pays.
#
#   bench/tls_bound.sh             1 GiB image, 3 rounds
#   ROUNDS=N IMAGE_MIB=N bench/tls_bound.sh
#   QUICK=1 bench/tls_bound.sh     256 MiB, 1 round
#   TRANSPORT=tcp bench/tls_bound.sh   127.0.0.1 ports instead of Unix sockets
set -euo pipefail

. "$(dirname "$0")/preamble.sh"
bench_sizes 256 0 1024 0
if [[ -n $QUICK ]]; then ROUNDS=${ROUNDS:-1}; else ROUNDS=${ROUNDS:-3}; fi
(($(nproc) >= 2)) || { echo "needs two CPUs" >&2; exit 1; }
TRANSPORT=${TRANSPORT:-unix}
[[ $TRANSPORT == unix || $TRANSPORT == tcp ]] || { echo "TRANSPORT is unix or tcp" >&2; exit 2; }
bench_work
find_fleece
probe_qemu_aio

# The image of bench/tls.sh (75 % random data, 25 % holes nbdcopy skips),
# so figures per GiB are in the units of its rows.
make_image
PKI=$WORK/pki
bash "$SRC/tests/interop/tls/make-pki.sh" "$PKI" >/dev/null

# AES-256-GCM (what both servers negotiate with libnbd) on 16 KiB records.
AES_KBS=$(openssl speed -elapsed -seconds 2 -bytes 16384 -evp aes-256-gcm 2>/dev/null |
  awk '/^AES-256-GCM/ { sub(/k$/, "", $2); print $2 }')
DATA_FRACTION=$(calc "$(stat -c '%b * %B' "$IMG") / $SIZE")
# Per GiB of image: only its data is encrypted.
AES_S_PER_GIB=$(calc "1073741824 / ($AES_KBS * 1000) * $DATA_FRACTION")

ROWS=$WORK/rows
: >"$ROWS"
for server in fleece qemu-nbd; do
  mkdir -p "$WORK/$server"
  listen=$WORK/$server/sock
  uri="nbds+unix:///d?socket=$listen&tls-certificates=$PKI/client"
  if [[ $TRANSPORT == tcp ]]; then
    port=$((20000 + RANDOM % 20000))
    listen=tcp:$port
    uri="nbds://127.0.0.1:$port/d?tls-certificates=$PKI/client"
  fi
  WORK=$WORK/$server TLS_CREDS=$PKI/server start_server "$server" "$IMG" "$listen"
  taskset -apc 0 "$SRV_PID" >/dev/null
  nbdcopy "$uri" null:  # warm the page cache and the server
  for ((round = 1; round <= ROUNDS; round++)); do
    for conns in 1 4; do
      s0=$(cpu_seconds "$SRV_PID")
      t0=$(date +%s.%N)
      /usr/bin/time -f "%U %S" -o "$WORK/time" taskset -c 1 nbdcopy --connections="$conns" "$uri" null:
      t1=$(date +%s.%N)
      s1=$(cpu_seconds "$SRV_PID")
      read -r cu cs <"$WORK/time"
      gib=$(calc "$SIZE / 1073741824")
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$conns" "$(calc "$SIZE / 1048576 / ($t1 - $t0)")" \
        "$(calc "($cu + $cs) / $gib")" "$(calc "($cu + $cs) / ($t1 - $t0)")" "$(calc "($s1 - $s0) / $gib")" >>"$ROWS"
    done
  done
  stop_server
done

echo
echo "fleece $FLEECE (tree $(git -C "$SRC" describe --always --dirty 2>/dev/null || echo '?')), image $SIZE_MIB MiB (75 % data, 25 % holes)," \
  "$ROUNDS round(s), $TRANSPORT sockets, server on CPU 0, nbdcopy on CPU 1, $(nproc) cores, $(date -u +%Y-%m-%d)"
printf 'AES-256-GCM (openssl speed, 16 KiB records): %.2f GiB/s on one core; %.2f of the image is data: %.3f s per GiB of image\n' \
  "$(calc "$AES_KBS * 1000 / 1073741824")" "$DATA_FRACTION" "$AES_S_PER_GIB"
/usr/bin/python3 - "$ROWS" "$AES_S_PER_GIB" "$(nproc)" <<'PYEOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
aes, cores = float(sys.argv[2]), int(sys.argv[3])
print()
print("| server | conns | MiB/s | nbdcopy CPU s/GiB | nbdcopy core busy | server CPU s/GiB |")
print("|---|---|---|---|---|---|")
client_min = None
for server in ("fleece", "qemu-nbd"):
    for conns in ("1", "4"):
        sel = [r for r in rows if r[0] == server and r[1] == conns]
        if not sel:
            continue
        med = [statistics.median(float(r[k]) for r in sel) for k in range(2, 6)]
        lo = min(float(r[3]) for r in sel)
        client_min = lo if client_min is None else min(client_min, lo)
        print(f"| {server} | {conns} | {med[0]:,.0f} | {med[1]:.2f} | {med[2]:.2f} | {med[3]:.2f} |")
print()
free = cores / client_min * 1024
aes_bound = cores / (client_min + aes) * 1024
print(f"nbdcopy's least CPU per GiB over TLS, of all passes: {client_min:.2f} s")
print(f"bound with a server costing nothing: {cores} cores / {client_min:.2f} s = {free:,.0f} MiB/s")
print(f"bound with a server paying only AES-256-GCM: {cores} / ({client_min:.2f} + {aes:.3f}) s = {aes_bound:,.0f} MiB/s")
PYEOF
