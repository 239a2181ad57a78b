# The start every bench script shares, sourced first thing:
#   . "$(dirname "$0")/preamble.sh"
# Sets SRC (the tree) and HERE (bench/), sources servers.sh and measure.sh,
# sets QUICK from the environment.
#   bench_sizes QUICK_MIB QUICK_S FULL_MIB FULL_S   SIZE_MIB (IMAGE_MIB overrides) and RUNTIME
#   bench_work                                    WORK, a fresh scratch dir,
#     removed at exit after killing SRV_PID and FIO_PID (when set)

SRC=$(cd "$(dirname "$0")/.." && pwd)
HERE=$SRC/bench
. "$HERE/servers.sh"
. "$HERE/measure.sh"

QUICK=${QUICK:-}

bench_sizes() {
  if [[ -n $QUICK ]]; then SIZE_MIB=$1 RUNTIME=$2; else SIZE_MIB=$3 RUNTIME=$4; fi
  SIZE_MIB=${IMAGE_MIB:-$SIZE_MIB}  # IMAGE_MIB=N: another image size
}

bench_work() {
  WORK=$(mktemp -d /tmp/fleece-bench.XXXXXX)
  SRV_PID= FIO_PID=
  trap '[[ -n $FIO_PID ]] && kill -KILL $FIO_PID 2>/dev/null; [[ -n $SRV_PID ]] && kill -KILL $SRV_PID 2>/dev/null; rm -rf "$WORK"' EXIT
}
