#!/bin/bash
# The C++ libnbd client (libnbd_client.cpp): every command, flag and option
# call, results checked against the files behind the exports.
. "$(dirname "$0")/lib.sh"

client=${LIBNBD_CLIENT:-${FLEECE_BUILD_DIR:-$HERE/../../build-interop}/tests/interop/libnbd_client}
[[ -x $client ]] || fail "libnbd_client not built ($client)"
make_image "$T/rw.img" 12 21
make_image "$T/ro.img" 4 22
serve_start --disk rw="$T/rw.img" --disk ro="$T/ro.img",readonly --listen unix:"$T/s"
"$client" "$T/s" rw "$T/rw.img" ro "$T/ro.img" || fail "libnbd_client reported failures"
assert_server_alive
serve_stop
echo "test_libnbd_client: ok"
