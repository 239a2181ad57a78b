// sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET.
//
// A path starting with '@' is in the abstract namespace (the '@' becomes a
// NUL byte). Without NOTIFY_SOCKET this does nothing and returns true.
#pragma once

#include <string_view>

namespace fleece::server {

bool sd_notify(std::string_view state);  // e.g. "READY=1", "STOPPING=1"

}  // namespace fleece::server
