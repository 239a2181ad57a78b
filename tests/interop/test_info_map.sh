#!/bin/bash
# nbdinfo --list shows every export with its size and read-only flag, and
# nbdinfo --map (base:allocation) matches `qemu-img map` of the file.
. "$(dirname "$0")/lib.sh"

make_image "$T/a.img" 16 1
make_image "$T/b.img" 8 2
truncate -s 3M "$T/c.img"    # all hole
serve_start --disk alpha="$T/a.img" --disk beta="$T/b.img",readonly \
  --disk gamma="$T/c.img" --listen unix:"$T/s"

nbdinfo --list --json "nbd+unix:///?socket=$T/s" >"$T/list.json"
$PY - "$T/list.json" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
got = {e["export-name"]: (e["export-size"], e["is_read_only"], e["can_multi_conn"])
       for e in d["exports"]}
want = {"alpha": (16 << 20, False, True), "beta": (8 << 20, True, True),
        "gamma": (3 << 20, False, True)}
assert got == want, f"exports: got {got}, want {want}"
for e in d["exports"]:
    assert "base:allocation" in e.get("contexts", []), f"{e['export-name']}: no base:allocation"
    if e["is_read_only"]:
        assert not e["can_trim"] and not e["can_zero"], "read-only export offers trim/zero"
    else:
        assert e["can_flush"] and e["can_fua"] and e["can_trim"] and e["can_zero"], e
print("list ok")
PYEOF

for pair in alpha:a beta:b gamma:c; do
  name=${pair%%:*} file=$T/${pair##*:}.img
  nbdinfo --map --json "nbd+unix:///$name?socket=$T/s" >"$T/$name.nbdmap"
  qemu-img map --output=json -f raw "$file" >"$T/$name.qmap"
  $PY "$HERE/compare_map.py" "$T/$name.nbdmap" "$T/$name.qmap" || fail "map of $name"
  # Size as a client sees it.
  [[ $(nbdinfo --size "nbd+unix:///$name?socket=$T/s") == $(stat -c %s "$file") ]] || fail "size of $name"
done

# A name that does not exist is refused.
if nbdinfo "nbd+unix:///nosuch?socket=$T/s" >/dev/null 2>&1; then
  fail "export 'nosuch' was accepted"
fi

serve_stop
echo "test_info_map: ok"
