#!/bin/bash
# qemu-io writes (pattern, write zeroes, discard) over NBD, read back over NBD
# with read -P, and checked byte by byte on the file after a clean stop.
. "$(dirname "$0")/lib.sh"

make_image "$T/d.img" 16 5
cp --sparse=always "$T/d.img" "$T/expect.img"
serve_start --disk d="$T/d.img" --listen unix:"$T/s"
uri="nbd+unix:///d?socket=$T/s"

qio() { qemu-io -f raw "$@" "$uri" >"$T/qio.out" 2>&1 || { cat "$T/qio.out" >&2; return 1; }
        ! grep -qiE 'error|failed|mismatch' "$T/qio.out" || { cat "$T/qio.out" >&2; return 1; }; }
# expect OFFSET LEN BYTE: mirror the write into the expected image.
expect() { $PY -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(int(sys.argv[2])); f.write(bytes([int(sys.argv[4],0)])*int(sys.argv[3]))' "$T/expect.img" "$1" "$2" "$3"; }

# Pattern writes: aligned, unaligned, crossing data/hole boundaries, with FUA.
qio -c 'write -P 0xab 0 64k'              || fail "write 0 64k"
expect 0 65536 0xab
qio -c 'write -P 0xcd 1000 3000'          || fail "unaligned write"
expect 1000 3000 0xcd
qio -c 'write -P 0x11 -f 983000 200000'   || fail "FUA write across data/hole"
expect 983000 200000 0x11
qio -c 'write -P 0x22 3145728 1M'         || fail "write into a hole chunk"
expect 3145728 1048576 0x22
# Write zeroes (no hole), and with unmap allowed.
qio -c 'write -z 2M 256k'                 || fail "write -z"
expect 2097152 262144 0
qio -c 'write -z -u 4M 512k'              || fail "write -z -u"
expect 4194304 524288 0
# Discard a whole data chunk.
qio -c 'discard 8M 1M'                    || fail "discard"
qio -c 'flush'                            || fail "flush"

# Read back over NBD with patterns.
qio -c 'read -P 0xab 0 1000' -c 'read -P 0xcd 1000 3000' -c 'read -P 0xab 4000 61536' || fail "read back 0..64k"
qio -c 'read -P 0x11 983000 200000'       || fail "read back FUA write"
qio -c 'read -P 0x22 3145728 1M'          || fail "read back hole write"
qio -c 'read -P 0 2M 256k'                || fail "read back write -z"
qio -c 'read -P 0 4M 512k'                || fail "read back write -z -u"
# A mismatch must be reported (the check is not vacuous).
qemu-io -f raw -c 'read -P 0x99 0 4k' "$uri" >"$T/neg.out" 2>&1 || true
grep -q 'Pattern verification failed' "$T/neg.out" || fail "qemu-io did not detect a wrong pattern"

serve_stop

# The file holds exactly the expected bytes outside the discarded range; a
# discarded range of a raw file reads as zeroes (the hole is punched).
[[ $(sha_range "$T/d.img" 0 8388608) == $(sha_range "$T/expect.img" 0 8388608) ]] \
  || fail "file differs from expected in 0..8M"
[[ $(sha_range "$T/d.img" 9437184 7340032) == $(sha_range "$T/expect.img" 9437184 7340032) ]] \
  || fail "file differs from expected in 9M..16M"
[[ $(sha_range "$T/d.img" 8388608 1048576) == $(head -c 1048576 /dev/zero | sha256sum | cut -d' ' -f1) ]] \
  || fail "discarded range of the file is not zero"
qemu-img map --output=json -f raw "$T/d.img" | $PY -c '
import json, sys
m = json.load(sys.stdin)
for e in m:
    if e["data"] and e["start"] < 9437184 and e["start"] + e["length"] > 8388608:
        sys.exit(f"discarded range still allocated: {e}")
' || fail "discard did not punch a hole"
echo "test_qemu_io: ok"
