#!/bin/bash
# fio's nbd engine: random writes with crc32c verification, then a separate
# verify-only pass over a new connection, and a bounded random read/write mix.
. "$(dirname "$0")/lib.sh"

cd "$T"   # fio leaves verify state files in the working directory
truncate -s 64M "$T/d.img"
serve_start --disk d="$T/d.img" --listen unix:"$T/s"
uri="nbd+unix:///d?socket=$T/s"
common=(--ioengine=nbd --uri="$uri" --size=32M --verify=crc32c --verify_fatal=1
        --randrepeat=1 --randseed=42 --output-format=terse --output="$T/fio.out")

fio --name=w --rw=randwrite --bs=4k --iodepth=32 "${common[@]}" \
  || { cat "$T/fio.out"; fail "fio randwrite+verify"; }
fio --name=w --rw=randwrite --bs=4k --iodepth=32 --verify_only=1 "${common[@]}" \
  || { cat "$T/fio.out"; fail "fio verify_only pass"; }
# Mixed sizes, bounded in time, also verified.
fio --name=m --rw=randwrite --bsrange=512-256k --iodepth=16 --offset=32M "${common[@]}" \
  --do_verify=1 || { cat "$T/fio.out"; fail "fio mixed-size write+verify"; }
fio --name=r --rw=randread --bs=4k --iodepth=32 --time_based --runtime=3 \
  --ioengine=nbd --uri="$uri" --size=64M --output-format=json --output="$T/r.json" \
  || fail "fio randread"
$PY -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; assert j["error"]==0 and j["read"]["io_bytes"]>0, j["error"]' "$T/r.json" \
  || fail "fio randread reported an error"
serve_stop
echo "test_fio: ok"
