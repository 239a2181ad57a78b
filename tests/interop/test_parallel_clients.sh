#!/bin/bash
# Several clients at once: two nbdcopy reads of two exports in parallel, and a
# writer on a third export at the same time; every checksum right.
. "$(dirname "$0")/lib.sh"

make_image "$T/a.img" 40 11
make_image "$T/b.img" 40 12
make_image "$T/w.src" 40 13
truncate -s 40M "$T/w.img"
serve_start --disk a="$T/a.img",readonly --disk b="$T/b.img",readonly \
  --disk w="$T/w.img" --listen unix:"$T/s"

nbdcopy --connections=4 "nbd+unix:///a?socket=$T/s" "$T/a.out" & p1=$!
nbdcopy --connections=4 "nbd+unix:///b?socket=$T/s" "$T/b.out" & p2=$!
nbdcopy --connections=2 "$T/w.src" "nbd+unix:///w?socket=$T/s" & p3=$!
nbdcopy "nbd+unix:///a?socket=$T/s" - | sha256sum | cut -d' ' -f1 >"$T/a.pipe" & p4=$!
for p in $p1 $p2 $p3 $p4; do wait $p || fail "a client failed"; done

[[ $(sha "$T/a.out") == $(sha "$T/a.img") ]] || fail "export a read differs"
[[ $(sha "$T/b.out") == $(sha "$T/b.img") ]] || fail "export b read differs"
[[ $(cat "$T/a.pipe") == $(sha "$T/a.img") ]] || fail "export a stream differs"
nbdcopy "nbd+unix:///w?socket=$T/s" "$T/w.out"
[[ $(sha "$T/w.out") == $(sha "$T/w.src") ]] || fail "export w differs after parallel write"
serve_stop
[[ $(sha "$T/w.img") == $(sha "$T/w.src") ]] || fail "file w differs after stop"
echo "test_parallel_clients: ok"
