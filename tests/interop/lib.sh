# Helpers for the interop tests. Source it: `. "$(dirname "$0")/lib.sh"`.
#
# The server under test is fleece ($FLEECE). With PEER=qsd the same tests run
# against qemu-storage-daemon instead (PEER=nbdkit: nbdkit file, one export),
# which validates the tests themselves:
# serve_start takes fleece's command line and translates it.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3          # has the `nbd` module
PEER=${PEER:-}
FLEECE=${FLEECE:-${FLEECE_BUILD_DIR:-$HERE/../../build-interop}/server/fleece}

# One scratch dir per test, removed on exit together with any server left.
T=$(mktemp -d /tmp/fleece-interop.XXXXXX)
SERVER_PID=
SERVER_LOG=$T/server.log
cleanup() {
  local rc=$?
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    { wait "$TIMEOUT_PID"; } 2>/dev/null || true
  fi
  if ((rc != 0)) && [[ -s $SERVER_LOG ]]; then
    echo "---- server log (last 40 lines) ----" >&2
    tail -n 40 "$SERVER_LOG" >&2
  fi
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT
cd "$T"   # whatever a tool leaves in its working directory goes away too

log() { echo "[$(basename "$0" .sh)] $*" >&2; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# A free TCP port on 127.0.0.1 (the kernel picks it; tiny race is acceptable).
free_port() {
  $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

have_ipv6() {
  $PY -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1",0))' 2>/dev/null
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# hold_lock FILE: another process takes an flock on FILE and holds it (as a
# running server holds its stores) until killed or 30 s pass; waits until it
# holds it. Sets HOLDER_PID (killing it frees the lock: no child keeps the fd).
hold_lock() {
  timeout 30 $PY -c 'import fcntl, sys, time
f = open(sys.argv[1], "r+"); fcntl.flock(f, fcntl.LOCK_EX); print("locked", flush=True); time.sleep(30)' \
    "$1" >"$T/lock.out" &
  HOLDER_PID=$!
  for ((i = 0; i < 50; i++)); do grep -qs locked "$T/lock.out" && return 0; sleep 0.1; done
  fail "the lock holder did not start"
}


# sha256 of LEN bytes at OFFSET of FILE.
sha_range() {
  $PY - "$1" "$2" "$3" <<'EOF'
import hashlib, sys
f, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(f, "rb") as fh:
    fh.seek(off)
    print(hashlib.sha256(fh.read(n)).hexdigest())
EOF
}

# make_image PATH SIZE_MIB [SEED]
# A sparse raw image of SIZE_MIB MiB, laid out in 1 MiB chunks by index i:
#   i % 4 == 3 -> hole; i % 8 == 5 -> allocated zeros; else pseudo-random data
#   (deterministic from SEED). The last 64 KiB of every data chunk are a hole,
#   so holes of several sizes appear.
make_image() {
  $PY - "$1" "$2" "${3:-1}" <<'EOF'
import os, random, sys
path, mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
M = 1 << 20
with open(path, "wb") as f:
    f.truncate(mib * M)
    for i in range(mib):
        if i % 4 == 3:
            continue
        f.seek(i * M)
        if i % 8 == 5:
            f.write(bytes(M))
        else:
            f.write(rng.randbytes(M - 65536))
EOF
}

# Writable copy of an image that keeps its holes.
copy_sparse() { cp --sparse=always "$1" "$2"; }

# ---------------------------------------------------------------- server

# serve_start ARGS...  (fleece serve's arguments)
# Starts the server in the background, bounded by `timeout 120`, and waits
# (bounded) for its ready line. Sets SERVER_PID (the server process itself).
serve_start() {
  : >"$SERVER_LOG"
  if [[ $PEER == qsd ]]; then
    _qsd_start "$@"
    return
  fi
  if [[ $PEER == nbdkit ]]; then
    _nbdkit_start "$@"
    return
  fi
  [[ -x $FLEECE ]] || fail "fleece binary not found at $FLEECE"
  # Keep the QMP socket (default ./fleece.qmp) inside the scratch dir.
  [[ " $* " == *" --qmp "* ]] || set -- "$@" --qmp unix:"$T/fleece.qmp"
  # exec: the pid we get is the one of `timeout`; the server is its child.
  timeout 120 "$FLEECE" serve "$@" >"$T/server.out" 2>>"$SERVER_LOG" &
  local tpid=$!
  local i
  for ((i = 0; i < 300; i++)); do
    if grep -qx 'fleece: ready' "$T/server.out" 2>/dev/null; then
      SERVER_PID=$(pgrep -P "$tpid" | head -n1)
      [[ -n $SERVER_PID ]] || fail "server exited right after ready"
      TIMEOUT_PID=$tpid
      return 0
    fi
    if ! kill -0 "$tpid" 2>/dev/null; then
      wait "$tpid" && rc=0 || rc=$?
      cat "$T/server.out" >&2
      fail "server exited with status $rc before ready"
    fi
    sleep 0.1
  done
  fail "server not ready within 30 s"
}

# Stops the server with SIGTERM and checks it exits 0 within 30 s.
serve_stop() {
  [[ -n $SERVER_PID ]] || return 0
  kill -TERM "$SERVER_PID"
  local i rc
  for ((i = 0; i < 300; i++)); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID"
    fail "server did not exit within 30 s of SIGTERM"
  fi
  wait "$TIMEOUT_PID" && rc=0 || rc=$?
  SERVER_PID=
  ((rc == 0)) || fail "server exited with status $rc after SIGTERM"
}

# qemu-storage-daemon speaking the same command line (for validating tests).
_qsd_start() {
  local args=() n=0 listen=() maxconn=
  while (($#)); do
    case $1 in
      --disk)
        local spec=$2 name path ro=off opts
        name=${spec%%=*}; spec=${spec#*=}
        path=${spec%%,*}; opts=${spec#"$path"}
        [[ $opts == *readonly* ]] && ro=on
        local w=on; [[ $ro == on ]] && w=off
        args+=(--blockdev "driver=file,node-name=n$n,filename=$path,read-only=$ro,discard=unmap")
        args+=(--export "type=nbd,id=e$n,node-name=n$n,name=$name,writable=$w")
        n=$((n + 1)); shift 2 ;;
      --listen) listen+=("$2"); shift 2 ;;
      --max-connections) maxconn=$2; shift 2 ;;
      *) shift 2 ;;  # options qsd does not have
    esac
  done
  local l=${listen[0]:-unix:./fleece.sock} addr
  case $l in
    unix:*) addr="addr.type=unix,addr.path=${l#unix:}" ;;
    tcp:\[*) local hp=${l#tcp:[}; addr="addr.type=inet,addr.host=${hp%%]*},addr.port=${hp##*:}" ;;
    tcp:*) local hp=${l#tcp:}; addr="addr.type=inet,addr.host=${hp%:*},addr.port=${hp##*:}" ;;
  esac
  [[ -n $maxconn ]] && addr+=",max-connections=$maxconn"
  timeout 120 qemu-storage-daemon --nbd-server "$addr" "${args[@]}" \
    --pidfile "$T/qsd.pid" >"$T/server.out" 2>>"$SERVER_LOG" &
  TIMEOUT_PID=$!
  local i
  for ((i = 0; i < 300; i++)); do
    if [[ -s $T/qsd.pid ]]; then
      SERVER_PID=$(cat "$T/qsd.pid"); return 0
    fi
    kill -0 "$TIMEOUT_PID" 2>/dev/null || fail "qemu-storage-daemon failed"
    sleep 0.1
  done
  fail "qemu-storage-daemon not ready"
}

# nbdkit's file plugin: one export (the first --disk), first unix listener.
_nbdkit_start() {
  local name= path= ro=() sock= spec
  while (($#)); do
    case $1 in
      --disk) [[ -n $name ]] || { spec=$2; name=${spec%%=*}; spec=${spec#*=}; path=${spec%%,*}
              [[ $spec == *readonly* ]] && ro=(-r); }; shift 2 ;;
      --listen) [[ -n $sock || $2 != unix:* ]] || sock=${2#unix:}; shift 2 ;;
      *) shift 2 ;;
    esac
  done
  timeout 120 nbdkit -f -U "$sock" -e "$name" -P "$T/nbdkit.pid" "${ro[@]}" file "$path" \
    >"$T/server.out" 2>>"$SERVER_LOG" &
  TIMEOUT_PID=$!
  local i
  for ((i = 0; i < 300; i++)); do
    if [[ -s $T/nbdkit.pid ]]; then
      SERVER_PID=$(cat "$T/nbdkit.pid"); return 0
    fi
    kill -0 "$TIMEOUT_PID" 2>/dev/null || fail "nbdkit failed"
    sleep 0.1
  done
  fail "nbdkit not ready"
}

# Fails unless the server is still alive (after a hostile client, say).
assert_server_alive() {
  kill -0 "$SERVER_PID" 2>/dev/null || fail "server died"
}
