#!/bin/bash
# TLS benchmark: fleece, qemu-nbd and nbdkit serving the same raw image with
# the same X.509 certificates (client certificates verified by all three),
# each also in plaintext, in one run; prints a markdown table with the
# TLS/plaintext ratio of each server and fleece/peer ratios under TLS.
#
#   bench/tls.sh              full run: 2 GiB image, 15 s random reads, 3 rounds (~10 min)
#   QUICK=1 bench/tls.sh      smoke test: 256 MiB image, 3 s runs, 1 round (< 60 s)
#   FLEECE=path bench/tls.sh  use this binary instead of building build-bench
#   SERVERS="fleece qemu-nbd" compare a subset; ROUNDS=N rounds
#   TRANSPORT=tcp             serve on 127.0.0.1 ports instead of Unix sockets
#                             (TCP is what TLS crosses a network on)
#
# All six servers (three programs, plaintext and TLS) run at once, each on its
# own Unix socket (or port), and every row is measured on each of them in turn, round
# after round, so a change in the machine's load falls on all of them alike;
# the table gives the median of the rounds and their range.
# Rows: nbdcopy to null: with 1 and 4 connections; 4 KiB random reads at
# queue depth 32 over one connection with bench/randread.cpp (a libnbd
# client: fio's nbd engine has no TLS), in both modes.
set -euo pipefail

. "$(dirname "$0")/preamble.sh"
if [[ -n $QUICK ]]; then SIZE_MIB=256 RUNTIME=3 ROUNDS=${ROUNDS:-1}; else SIZE_MIB=2048 RUNTIME=15 ROUNDS=${ROUNDS:-3}; fi
SERVERS=${SERVERS:-fleece qemu-nbd nbdkit}
MODES="plain tls"
TRANSPORT=${TRANSPORT:-unix}
[[ $TRANSPORT == unix || $TRANSPORT == tcp ]] || { echo "TRANSPORT is unix or tcp" >&2; exit 2; }

WORK=$(mktemp -d /tmp/fleece-tlsbench.XXXXXX)
declare -A PID
cleanup() {
  local p
  for p in "${PID[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

find_fleece
probe_qemu_aio

echo "building the random-read client" >&2
RANDREAD=$WORK/randread
g++ -std=c++20 -O2 -o "$RANDREAD" "$HERE/randread.cpp" $(pkg-config --cflags --libs libnbd)

PKI=$WORK/pki
bash "$SRC/tests/interop/tls/make-pki.sh" "$PKI"
make_image

# uri NAME MODE: the URI of that server; TLS clients present the client
# certificate of make-pki.sh (CN=backup1) and trust its CA.
uri() {
  local sock=$WORK/$1-$2/sock tls=
  [[ $2 == tls ]] && tls=tls-certificates=$PKI/client
  if [[ $TRANSPORT == tcp ]]; then
    echo "nbd${tls:+s}://127.0.0.1:$(port "$1" "$2")/d${tls:+?$tls}"
  else
    echo "nbd${tls:+s}+unix:///d?socket=$sock${tls:+&$tls}"
  fi
}

# port NAME MODE: a port of its own for each server (TRANSPORT=tcp).
port() {
  local i=0 s m
  for s in $SERVERS; do
    for m in $MODES; do
      [[ $s == "$1" && $m == "$2" ]] && { echo $((PORT_BASE + i)); return; }
      i=$((i + 1))
    done
  done
}
PORT_BASE=$((20000 + RANDOM % 20000))

# randread_run URI: 4k random reads at qd32; prints "IOPS requests", the
# requests counting the warm-up second too, as the server's CPU does.
randread_run() { "$RANDREAD" "$1" "$RUNTIME" 32 "$IMG"; }

# Start everything; for each TLS server, say which cipher it negotiated.
CIPHERS=
for server in $SERVERS; do
  for mode in $MODES; do
    mkdir -p "$WORK/$server-$mode"
    creds=
    [[ $mode == tls ]] && creds=$PKI/server
    listen=$WORK/$server-$mode/sock
    [[ $TRANSPORT == tcp ]] && listen=tcp:$(port "$server" "$mode")
    WORK=$WORK/$server-$mode TLS_CREDS=$creds start_server "$server" "$IMG" "$listen"
    PID[$server:$mode]=$SRV_PID
    if [[ $mode == tls ]]; then
      c=$(LIBNBD_DEBUG=1 nbdinfo --size "$(uri "$server" tls)" 2>&1 >/dev/null |
        sed -n 's/.*connection is using TLS: cipher \([^ ]*\).*/\1/p' | head -1)
      [[ -n $c ]] || { echo "$server: no TLS connection" >&2; exit 1; }
      CIPHERS+="${CIPHERS:+; }$server: $c"
    fi
  done
done

# every_server LABEL UNIT CMD ARGS...: runs CMD ARGS URI on each server and
# mode in turn (plaintext and TLS of one program next to each other).
every_server() {
  local label=$1 unit=$2 server mode; shift 2
  for server in $SERVERS; do
    for mode in $MODES; do
      SRV_PID=${PID[$server:$mode]}
      MODE=$mode measure "$server" "$label" "$unit" "$@" "$(uri "$server" "$mode")"
    done
  done
}

# Warm the page cache and each server the same way (the TLS ones too).
for server in $SERVERS; do
  for mode in $MODES; do nbdcopy "$(uri "$server" "$mode")" null:; done
done
for ((round = 1; round <= ROUNDS; round++)); do
  echo "== round $round of $ROUNDS" >&2
  every_server "nbdcopy read, 1 conn" MiB/s copy_to_null 1
  every_server "nbdcopy read, 4 conns" MiB/s copy_to_null 4
  every_server "4k randread qd32" IOPS randread_run
done
for key in "${!PID[@]}"; do
  printf 'rss\t%s\t%s\n' "${key/:/ }" "$(peak_rss_kib "${PID[$key]}")" >>"$ROWS"
done
for key in "${!PID[@]}"; do SRV_PID=${PID[$key]} stop_server; unset "PID[$key]"; done

echo
echo "fleece $FLEECE (tree $(git -C "$SRC" describe --always --dirty 2>/dev/null || echo '?')), image ${SIZE_MIB} MiB," \
  "random reads ${RUNTIME} s, $ROUNDS round(s), qemu-nbd $QEMU_AIO, $TRANSPORT sockets, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo "negotiated ciphers: $CIPHERS"
echo
/usr/bin/python3 "$HERE/report.py" "$ROWS"
