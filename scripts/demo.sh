#!/usr/bin/env bash
# The main job on a demo disk: install, build, serve a disk image over NBD,
# show real clients (nbdinfo, nbdcopy, qemu-img) using it, then fleece it:
# a backup pulled from a frozen view while a guest (fio) keeps writing.
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

echo "== fleecing: a guest keeps writing vm0 while a backup is pulled from a frozen view"
ctl() { "$fleece" ctl --qmp "$work/fleece.qmp" "$@"; }
fio --name=guest --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k --iodepth=16 \
  --time_based --runtime=60 --output=/dev/null &
writer=$!
sleep 1
ctl fleece-start id=backup1 'devices:=["vm0"]'
store=$(ctl query-fleeces | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["devices"][0]["store"])')
echo "-- nbdcopy vm0@backup1 while the guest writes"
nbdcopy --connections=4 "nbd+unix:///vm0@backup1?socket=$sock" "$work/backup.img"
kill $writer; wait $writer 2>/dev/null || true
# A flush makes the moment quiescent: the store's qcow2 metadata is on disk.
/usr/bin/python3 -c 'import nbd, sys; h = nbd.NBD(); h.connect_uri(sys.argv[1]); h.flush()' "$uri"
echo "-- the store $(basename "$store") is a qcow2 backed by the disk:"
qemu-img info -U "$store" | grep -E "^(file format|backing file|cluster_size)"
echo "-- qemu-img reads the frozen image through the store's backing chain and compares it with the backup"
qemu-img compare -U -f qcow2 -F raw "$store" "$work/backup.img"
sha_live=$(nbdcopy "$uri" - | sha256sum | cut -d' ' -f1)
sha_backup=$(sha256sum < "$work/backup.img" | cut -d' ' -f1)
echo "live disk now  $sha_live"
echo "backup         $sha_backup"
[ "$sha_live" != "$sha_backup" ] || { echo "the guest wrote nothing?"; exit 1; }
ctl query-fleeces | grep -E '"(preserved-bytes|write-pause-us|read-bytes)"'
ctl fleece-stop id=backup1
[ ! -e "$store" ] || { echo "store left behind"; exit 1; }

kill -TERM $pid; wait $pid; trap - EXIT
echo "== demo done: the copy pulled over NBD equals the disk, and a backup pulled while"
echo "   the guest wrote equals the disk as it was at fleece-start"
