#!/usr/bin/env bash
# The main job on a demo disk: install, build, serve a disk image over NBD,
# and show real clients (nbdinfo, nbdcopy, qemu-img) using it.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"

"$src/scripts/install-deps.sh"
"$src/scripts/build.sh" "$src/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
fleece=$src/build/server/fleece

work=$src/demo
rm -rf "$work"; mkdir -p "$work"
disk=$work/disk.img
sock=$work/fleece.sock

echo "== a 256 MiB demo disk: 4 MiB of data every 16 MiB, holes between"
truncate -s 256M "$disk"
for i in $(seq 0 15); do
  head -c 4M /dev/urandom | dd of="$disk" bs=1M seek=$((i * 16)) conv=notrunc status=none
done

echo "== fleece serve"
"$fleece" serve --disk "vm0=$disk" --listen "unix:$sock" --qmp "unix:$work/fleece.qmp" > "$work/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "fleece: ready" "$work/serve.log" && break; sleep 0.1; done
grep -q "fleece: ready" "$work/serve.log" || { cat "$work/serve.log"; exit 1; }

uri="nbd+unix:///vm0?socket=$sock"
echo "== nbdinfo $uri"
nbdinfo "$uri"
echo "== nbdinfo --map (allocation as the server reports it)"
nbdinfo --map "$uri" | head -8
echo "== nbdcopy the export to a file, 4 connections, and compare"
nbdcopy --connections=4 "$uri" "$work/copy.img"
sha_disk=$(sha256sum < "$disk" | cut -d' ' -f1)
sha_copy=$(sha256sum < "$work/copy.img" | cut -d' ' -f1)
echo "disk  $sha_disk"
echo "copy  $sha_copy"
[ "$sha_disk" = "$sha_copy" ] || { echo "MISMATCH"; exit 1; }
echo "== qemu-img compare (over NBD)"
qemu-img compare -f raw -F raw "$disk" "$uri"

kill -TERM $pid; wait $pid; trap - EXIT
echo "== demo done: the copy pulled over NBD equals the disk"
