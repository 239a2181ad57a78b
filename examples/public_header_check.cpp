// Compiled with include/ as the only include path: <fleece/fleece.hpp> must
// need nothing else (no Boost, no fmt, no fleece internals).
#include <fleece/fleece.hpp>

#include <type_traits>

static_assert(std::is_copy_constructible_v<fleece::Disk>);
static_assert(!std::is_copy_constructible_v<fleece::Engine>);
static_assert(std::is_constructible_v<fleece::Engine, fleece::EngineOptions, boost::asio::io_context&>);
