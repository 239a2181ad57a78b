#!/bin/bash
# qemu-img info / convert / compare over nbd+unix://, nbd:// on 127.0.0.1,
# and nbd://[::1] when IPv6 loopback exists.
. "$(dirname "$0")/lib.sh"

make_image "$T/src.img" 32 3
want=$(sha "$T/src.img")
port=$(free_port)
listens=(--listen unix:"$T/s" --listen tcp:127.0.0.1:"$port")
uris=("nbd+unix:///src?socket=$T/s" "nbd://127.0.0.1:$port/src")
if have_ipv6 && [[ $PEER != qsd ]]; then   # qsd has one listener only
  port6=$(free_port)
  listens+=(--listen "tcp:[::1]:$port6")
  uris+=("nbd://[::1]:$port6/src")
fi
[[ $PEER == qsd ]] && { listens=(--listen unix:"$T/s"); uris=("${uris[0]}"); }
truncate -s 32M "$T/dst.img"
serve_start --disk src="$T/src.img",readonly --disk dst="$T/dst.img" "${listens[@]}"

i=0
for uri in "${uris[@]}"; do
  log "uri $uri"
  qemu-img info --output=json "$uri" >"$T/info.json"
  $PY -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["virtual-size"]==32<<20, d' "$T/info.json" \
    || fail "qemu-img info: wrong size over $uri"

  # Export -> qcow2 and raw files; compare both ways.
  qemu-img convert -f raw -O qcow2 "$uri" "$T/out$i.qcow2"
  qemu-img compare -f raw -F qcow2 "$uri" "$T/out$i.qcow2" || fail "compare export vs qcow2 over $uri"
  qemu-img convert -f raw -O raw "$uri" "$T/out$i.raw"
  [[ $(sha "$T/out$i.raw") == "$want" ]] || fail "convert over $uri: checksum differs"
  # qemu-img map over NBD agrees with the file (holes preserved in qcow2).
  qemu-img map --output=json -f qcow2 "$T/out$i.qcow2" >"$T/q.map"
  $PY - "$T/q.map" <<'PYEOF' || fail "qcow2 made from the export lost the holes"
import json, sys
m = json.load(open(sys.argv[1]))
holes = sum(e["length"] for e in m if not e["data"])
assert holes >= 8 << 20, f"only {holes} bytes of holes"
PYEOF
  i=$((i + 1))
done

# Write into the writable export with convert (-n: target exists), then compare.
dst="${uris[-1]/src/dst}"
qemu-img convert -n -f qcow2 -O raw "$T/out0.qcow2" "$dst"
qemu-img compare -f raw -F raw "$dst" "$T/src.img" || fail "compare after convert into export"
# compare must notice a difference.
qemu-io -f raw -c 'write -P 0x5a 1M 4k' "$dst" >/dev/null
if qemu-img compare -f raw -F raw "$dst" "$T/src.img" >/dev/null; then
  fail "compare did not see a changed block"
fi
serve_stop
echo "test_qemu_img: ok"
