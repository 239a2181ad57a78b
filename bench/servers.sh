# Start and stop the servers being compared, each on a Unix socket with one
# export named "d". Sourced by run.sh and tls.sh; sets SRV_PID.

# find_fleece: FLEECE, or else a Release build of $SRC in $SRC/build-bench.
find_fleece() {
  if [[ -z ${FLEECE:-} ]]; then
    echo "building fleece (Release) in $SRC/build-bench" >&2
    cmake -S "$SRC" -B "$SRC/build-bench" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLEECE_TESTS=OFF >/dev/null
    ninja -C "$SRC/build-bench" -j2 fleece >&2
    FLEECE=$SRC/build-bench/server/fleece
  fi
  [[ -x $FLEECE ]] || { echo "no fleece binary at $FLEECE" >&2; exit 1; }
}

# start_server NAME IMAGE SOCKET: logs go to $WORK. FLEECE_ARGS: more words
# for fleece's command line (e.g. --store-dir DIR). With TLS_CREDS=DIR (a
# QEMU-layout x509 directory), the server requires TLS with those
# certificates and verifies client certificates against DIR/ca-cert.pem.
start_server() {
  local name=$1 img=$2 sock=$3 tls=() port=
  # "tcp:PORT" listens on 127.0.0.1:PORT instead of a Unix socket.
  if [[ $sock == tcp:* ]]; then port=${sock#tcp:}; else rm -f "$sock"; fi
  local fleece_listen=(--listen unix:"$sock") qemu_listen=(-k "$sock") nbdkit_listen=(-U "$sock")
  local listening='[[ -S $sock ]]'
  if [[ -n $port ]]; then
    fleece_listen=(--listen tcp:127.0.0.1:"$port") qemu_listen=(-b 127.0.0.1 -p "$port")
    nbdkit_listen=(-i 127.0.0.1 -p "$port")
    listening='[[ -n $(ss -Hltn "sport = :$port") ]]'
  fi
  if [[ -n ${TLS_CREDS:-} ]]; then
    case $name in
      fleece) tls=(--tls require --tls-creds "$TLS_CREDS" --tls-verify-peer) ;;
      qemu-nbd) tls=(--object "tls-creds-x509,id=tls0,dir=$TLS_CREDS,endpoint=server,verify-peer=on" --tls-creds tls0) ;;
      nbdkit) tls=(--tls=require --tls-certificates="$TLS_CREDS" --tls-verify-peer) ;;
    esac
  fi
  case $name in
    fleece)
      "$FLEECE" serve --disk d="$img",cache=writeback "${fleece_listen[@]}" "${tls[@]}" \
        --qmp unix:"$WORK/fleece.qmp" --log-level warn ${FLEECE_ARGS:-} >"$WORK/fleece.out" 2>"$WORK/fleece.err" &
      SRV_PID=$!
      wait_for 'grep -qx "fleece: ready" "$WORK/fleece.out"' "fleece" ;;
    qemu-nbd)
      # io_uring when the kernel allows it, else qemu-nbd's thread pool.
      qemu-nbd -f raw -t "${qemu_listen[@]}" --cache=writeback $QEMU_AIO -e 16 -x d "${tls[@]}" "$img" \
        2>"$WORK/qemu-nbd.err" &
      SRV_PID=$!
      wait_for "$listening" "qemu-nbd" ;;
    nbdkit)
      nbdkit -f "${nbdkit_listen[@]}" -e d "${tls[@]}" file "$img" 2>"$WORK/nbdkit.err" &
      SRV_PID=$!
      wait_for "$listening" "nbdkit" ;;
  esac
}

stop_server() {
  kill -TERM "$SRV_PID" 2>/dev/null || true
  wait "$SRV_PID" 2>/dev/null || true
  SRV_PID=
}

# wait_for CONDITION WHAT: poll up to 30 s while the server lives.
wait_for() {
  local i
  for ((i = 0; i < 300; i++)); do
    eval "$1" && return 0
    kill -0 "$SRV_PID" 2>/dev/null || { echo "$2 exited during start-up" >&2; cat "$WORK"/*.err >&2; return 1; }
    sleep 0.1
  done
  echo "$2 not ready within 30 s" >&2
  return 1
}

# CPU seconds (user+system, all threads) the process has used so far.
cpu_seconds() {
  awk -v tck="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / tck }' "/proc/$1/stat"
}

# Peak resident set size in KiB.
peak_rss_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

# Picks qemu-nbd's --aio: io_uring if a trial start survives.
probe_qemu_aio() {
  local img=$WORK/probe.img sock=$WORK/probe.sock
  truncate -s 1M "$img"
  qemu-nbd -f raw -t -k "$sock" --aio=io_uring "$img" 2>/dev/null &
  local pid=$! ok=
  for ((i = 0; i < 30; i++)); do
    [[ -S $sock ]] && nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null 2>&1 && { ok=1; break; }
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
  done
  kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
  rm -f "$img" "$sock"
  if [[ -n $ok ]]; then QEMU_AIO=--aio=io_uring; else QEMU_AIO=--aio=threads; fi
}
