#!/usr/bin/env bash
# Installs dependencies, builds fleece twice and runs every test:
#  1. build/       RelWithDebInfo: unit tests + interop tests against real peers
#  2. build-asan/  AddressSanitizer + UBSan: the unit tests again
# Ends with ctest's summary line; non-zero exit if anything failed.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"

"$src/scripts/install-deps.sh"

export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
jobs=$(nproc)

echo "== build (RelWithDebInfo)"
"$src/scripts/build.sh" "$src/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLEECE_WERROR=ON
echo "== build (ASan + UBSan)"
"$src/scripts/build.sh" "$src/build-asan" -DCMAKE_BUILD_TYPE=Debug -DFLEECE_SANITIZE=ON -DFLEECE_WERROR=ON

status=0
echo "== unit tests under ASan + UBSan"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir "$src/build-asan" -L unit --output-on-failure -j "$jobs" || status=1
echo "== unit and interop tests"
ctest --test-dir "$src/build" --output-on-failure -j "$jobs" || status=1
exit $status
