#!/bin/bash
# A fleece of a large disk (1 TiB, sparse: 268 million 4 KiB copy units)
# starts at once and holds the guest's writes for microseconds, a 4 KiB
# dirty bitmap frozen with it: the snapshot's bitmaps are made before the
# gate closes and a fresh store is seen empty without looking at every unit. Then a write far into the disk
# is copied aside and the view still reads the old bytes. Stopping it walks
# only the units the store holds, and a guest writing all along is never
# held up for long by either command.
. "$(dirname "$0")/lib.sh"

ctl() { timeout 30 "$FLEECE" ctl --qmp "$T/fleece.qmp" "$@"; }

truncate -s 1T "$T/big.img"
printf 'old!%.0s' $(seq 1024) | dd of="$T/big.img" bs=4096 seek=$((512 << 18)) conv=notrunc status=none
printf 'g%.0s' $(seq 4096) | dd of="$T/big.img" bs=4096 seek=$((1 << 18)) conv=notrunc status=none
head -c 64M /dev/urandom | dd of="$T/big.img" bs=1M seek=2048 conv=notrunc status=none
serve_start --disk d="$T/big.img" --listen unix:"$T/s"

# The guest: 4 KiB writes to one unit at 1 GiB (data before the fleece,
# so it is copied aside once), one after another until told to stop; it
# prints its slowest write in ms and how many it made.
$PY - "$T/s" "$T/guest.stop" >"$T/guest.out" <<'PYEOF' &
import nbd, os, sys, time
h = nbd.NBD(); h.connect_uri("nbd+unix:///d?socket=" + sys.argv[1])
worst, n = 0.0, 0
while not os.path.exists(sys.argv[2]):
    t = time.monotonic()
    h.pwrite(b"g" * 4096, 1 << 30)
    worst, n = max(worst, time.monotonic() - t), n + 1
print(round(worst * 1000), n)
PYEOF
GUEST=$!
sleep 0.5

# A 4 KiB-granularity dirty bitmap (32 MiB for 1 TiB) frozen at the
# point in time: its empty successor is made before writes are held.
ctl block-dirty-bitmap-add node=d name=inc granularity=4096 >/dev/null
t0=$(date +%s%N)
out=$(ctl fleece-start id=b devices:='["d"]' bitmaps:='[{"node": "d", "name": "inc"}]')
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
pause=$($PY -c 'import json,sys; print(json.loads(sys.argv[1])["write-pause-us"])' "$out")
log "fleece-start of 1 TiB: ${ms} ms, writes held ${pause} us"
((pause < 5000)) || fail "fleece-start held writes ${pause} us (> 5 ms) on a 1 TiB disk"
((ms < 3000)) || fail "fleece-start took ${ms} ms on a 1 TiB disk"

$PY - "$T/s" <<'PYEOF' || fail "live write / frozen read at 512 GiB"
import nbd, sys
at = 512 << 30
live = nbd.NBD(); live.connect_uri("nbd+unix:///d?socket=" + sys.argv[1])
view = nbd.NBD(); view.connect_uri("nbd+unix:///d@b?socket=" + sys.argv[1])
live.pwrite(b"new!" * 1024, at + 4096 - 100)  # two units: the old one and a hole
live.flush()
assert live.pread(4096, at) == b"old!" * 999 + b"new!" * 25
assert view.pread(4096, at) == b"old!" * 1024
assert view.pread(4096, at + 4096) == bytes(4096)
PYEOF
q=$(ctl query-fleeces)
$PY - "$q" <<'PYEOF' || fail "query-fleeces: $q"
import json, sys
d = json.loads(sys.argv[1])[0]["devices"][0]
# the old unit at 512 GiB and the guest's at 1 GiB; the hole next to the first
assert d["granularity"] == 4096 and d["preserved-bytes"] == 8192 and d["zero-clusters"] == 1, d
PYEOF
# 64 MiB of data at 2 GiB overwritten: the store's file grows by as much,
# and deleting it at the stop must not hold up the guest either.
$PY - "$T/s" <<'PYEOF' || fail "overwriting 64 MiB"
import nbd, sys
live = nbd.NBD(); live.connect_uri("nbd+unix:///d?socket=" + sys.argv[1])
for i in range(64):
    live.pwrite(b"n" * (1 << 20), (2 << 30) + (i << 20))
live.flush()
PYEOF
q=$(ctl query-fleeces)
$PY - "$q" <<'PYEOF' || fail "query-fleeces after 64 MiB: $q"
import json, sys
d = json.loads(sys.argv[1])[0]["devices"][0]
assert d["preserved-bytes"] == 8192 + (64 << 20), d
PYEOF
# The view's base:allocation over the whole 1 TiB: data only where the
# store holds old data, a zero unit where it holds a hole, the rest holes
# read from the disk; in large replies, not one per 256 MiB.
$PY - "$T/s" <<'PYEOF' || fail "base:allocation of the 1 TiB view"
import nbd, sys, time
G, M, K4 = 1 << 30, 1 << 20, 4096
view = nbd.NBD(); view.add_meta_context("base:allocation")
view.connect_uri("nbd+unix:///d@b?socket=" + sys.argv[1])
size, off, calls, extents = view.get_size(), 0, 0, []
t = time.monotonic()
def got(ctx, at, entries, err):
    pos = at
    for length, flags in zip(entries[0::2], entries[1::2]):
        if extents and extents[-1][2] == flags and extents[-1][0] + extents[-1][1] == pos:
            extents[-1][1] += length
        else:
            extents.append([pos, length, flags])
        pos += length
while off < size:
    before = extents[-1][0] + extents[-1][1] if extents else 0
    view.block_status(min(size - off, (4 << 30) - M), off, got)
    calls += 1
    off = extents[-1][0] + extents[-1][1]
    assert off > before
want = [[0, G, 3], [G, K4, 0], [G + K4, G - K4, 3], [2 * G, 64 * M, 0],
        [2 * G + 64 * M, 510 * G - 64 * M, 3], [512 * G, K4, 0], [512 * G + K4, K4, 2],
        [512 * G + 2 * K4, size - 512 * G - 2 * K4, 3]]
assert extents == want, extents[:12]
print(f"view map: {calls} calls, {round((time.monotonic() - t) * 1000)} ms")
assert calls <= 1024, calls
PYEOF

t0=$(date +%s%N)
ctl fleece-stop id=b >/dev/null
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
sleep 0.2
touch "$T/guest.stop"
wait "$GUEST" || fail "the guest's writes failed"
read -r worst writes <"$T/guest.out"
log "fleece-stop of 1 TiB: ${ms} ms; the guest's slowest write ${worst} ms of ${writes}"
((ms < 1000)) || fail "fleece-stop took ${ms} ms on a 1 TiB disk"
((worst < 500)) || fail "a guest write waited ${worst} ms during fleece-start/stop"
((writes > 0)) || fail "the guest wrote nothing"
assert_server_alive
serve_stop
echo "test_fleece_large: ok"
