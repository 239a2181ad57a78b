#!/bin/bash
# The public header <fleece/fleece.hpp> stands alone: it compiles with only
# include/ on the include path, and pulls in nothing but the standard
# library (no Boost, no fmt, no OpenSSL, no fleece internals).
. "$(dirname "$0")/lib.sh"

SRC=${FLEECE_SOURCE_DIR:-$HERE/../..}
CXX=${CXX:-c++}
printf '#include <fleece/fleece.hpp>\nint main() { fleece::EngineOptions o; return int(o.listen.size()); }\n' >"$T/only.cpp"

"$CXX" -std=c++20 -Wall -Wextra -Wpedantic -Werror -I"$SRC/include" -c "$T/only.cpp" -o "$T/only.o" \
  || fail "<fleece/fleece.hpp> does not compile on its own"

# Every header it reaches, one per line.
"$CXX" -std=c++20 -I"$SRC/include" -M "$T/only.cpp" | tr ' \\' '\n\n' | grep -v '^$' >"$T/deps"
if grep -E '/(boost|fmt|openssl|liburing)[/.]|/(block|server|nbd|cow|snapshot|tls|util)/' "$T/deps"; then
  fail "<fleece/fleece.hpp> includes headers beyond the standard library (listed above)"
fi
echo "test_embed_header: ok"
