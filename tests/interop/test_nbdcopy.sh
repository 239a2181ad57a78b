#!/bin/bash
# nbdcopy round trips with 1 and 4 connections: image -> export -> file, and
# file -> writable export -> file; checksums equal, holes kept in the export.
. "$(dirname "$0")/lib.sh"

make_image "$T/src.img" 48 7
make_image "$T/other.img" 48 8      # different data to overwrite with
truncate -s 48M "$T/dst.img"
serve_start --disk src="$T/src.img",readonly --disk dst="$T/dst.img" --listen unix:"$T/s"
want=$(sha "$T/src.img")

for c in 1 4; do
  # Read the export out to a file.
  rm -f "$T/out.img"
  nbdcopy --connections=$c "nbd+unix:///src?socket=$T/s" "$T/out.img"
  [[ $(sha "$T/out.img") == "$want" ]] || fail "read with $c connections: checksum differs"

  # Write other data, then the source, into the writable export; read it back.
  nbdcopy --connections=$c "$T/other.img" "nbd+unix:///dst?socket=$T/s"
  nbdcopy --connections=$c "$T/src.img" "nbd+unix:///dst?socket=$T/s"
  rm -f "$T/back.img"
  nbdcopy --connections=$c "nbd+unix:///dst?socket=$T/s" "$T/back.img"
  [[ $(sha "$T/back.img") == "$want" ]] || fail "write+read with $c connections: checksum differs"
  log "connections=$c ok"
done

# Through a pipe (stdin/stdout stream, no extents) too.
nbdcopy "nbd+unix:///src?socket=$T/s" - | sha256sum | cut -d' ' -f1 >"$T/pipe.sha"
[[ $(cat "$T/pipe.sha") == "$want" ]] || fail "stream read checksum differs"

serve_stop
# After a clean stop the file itself holds the source bytes.
[[ $(sha "$T/dst.img") == "$want" ]] || fail "dst file differs from source after stop"
echo "test_nbdcopy: ok"
