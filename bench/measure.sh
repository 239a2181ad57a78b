# Measuring helpers shared by run.sh and tls.sh (sourced after servers.sh).
# They append to $ROWS and read WORK, SRV_PID, SIZE and SOCK.

calc() { awk "BEGIN { print $1 }"; }

# make_image: the bench image $WORK/base.img of SIZE_MIB MiB, 4 MiB chunks,
# every 4th a hole, the rest random data (75%); sets IMG and SIZE (bytes),
# and ROWS to an empty file.
make_image() {
  IMG=$WORK/base.img SIZE=$((SIZE_MIB << 20)) ROWS=$WORK/rows.tsv
  : >"$ROWS"
  echo "making a $SIZE_MIB MiB image (75% random data, 25% holes)" >&2
  /usr/bin/python3 - "$IMG" "$SIZE_MIB" <<'PYEOF'
import os, sys
path, mib = sys.argv[1], int(sys.argv[2])
chunk = 4 << 20
with open(path, "wb") as f:
    f.truncate(mib << 20)
    for i in range((mib << 20) // chunk):
        if i % 4 != 3:
            f.seek(i * chunk)
            f.write(os.urandom(chunk))
PYEOF
  # Written back before any server starts: otherwise the first server
  # measured shares the machine with the kernel's writeback of the image.
  sync "$IMG"
}

# measure SERVER TEST UNIT CMD...: runs CMD, records the result it prints
# (a number in UNIT) and the server's CPU seconds during it. With MODE set,
# the row gets a seventh field, the mode (plain, tls).
measure() {
  local server=$1 test=$2 unit=$3; shift 3
  local c0 c1 value work
  c0=$(cpu_seconds "$SRV_PID")
  value=$("$@")
  c1=$(cpu_seconds "$SRV_PID")
  # work: GiB moved (throughput rows) or requests done (IOPS rows).
  work=${value#* }; value=${value%% *}
  printf '%s\t%s\t%s\t%s\t%s\t%s%s\n' "$test" "$server" "$unit" "$value" \
    "$(calc "$c1 - $c0")" "$work" "${MODE:+$'\t'$MODE}" >>"$ROWS"
  echo "  $test${MODE:+ ($MODE)}: $value $unit" >&2
}

# copy_to_null CONNS [URI]: nbdcopy of the whole export to null; prints
# "MiB/s GiB". URI defaults to export d on $SOCK in plaintext.
copy_to_null() {
  local conns=$1 uri=${2:-"nbd+unix:///d?socket=$SOCK"} t0 t1
  t0=$(date +%s.%N)
  nbdcopy --connections="$conns" "$uri" null:
  t1=$(date +%s.%N)
  echo "$(calc "$SIZE / 1048576 / ($t1 - $t0)") $(calc "$SIZE / 1073741824")"
}
