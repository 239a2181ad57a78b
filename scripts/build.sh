#!/usr/bin/env bash
# Configures and builds fleece. Usage: scripts/build.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$src/build}; shift || true
cmake -S "$src" -B "$dir" -G Ninja "$@" >/dev/null
cmake --build "$dir" -j "$(nproc)"
