#!/usr/bin/env bash
# Installs everything fleece's build, tests and benchmarks need on Debian 12.
# Idempotent; run as root or with sudo available.
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build ccache pkg-config
  libboost1.81-dev libboost-json1.81-dev libssl-dev liburing-dev libfmt-dev doctest-dev
  # tests: real NBD peers and tools
  libnbd-dev libnbd-bin python3 python3-libnbd qemu-utils fio gnutls-bin nbdkit socat
  # bench: qemu-storage-daemon, profiling
  qemu-system-common linux-perf
)

sudo=()
if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
