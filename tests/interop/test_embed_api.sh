#!/bin/bash
# The embedding API's contract, checked by a host program
# (examples/api_check/api_check.cpp): error codes, start/stop order,
# blocking calls on engine threads, stale handles, cache=none, both modes.
. "$(dirname "$0")/lib.sh"

CHECK=${FLEECE_EMBED_API_CHECK:-${FLEECE_BUILD_DIR:-$HERE/../../build-embed}/examples/fleece_embed_api_check}
[[ -x $CHECK ]] || fail "api check not found at $CHECK (built by the examples/ target fleece_embed_api_check)"
mkdir "$T/scratch"
timeout 120 "$CHECK" "$T/scratch" 2>>"$SERVER_LOG" || fail "api check failed (see above)"
echo "test_embed_api: ok"
