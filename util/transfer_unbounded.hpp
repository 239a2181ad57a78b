// TransferAllUnbounded: a completion condition for asio::async_write and
// async_read of large buffers. Asio's transfer_all lets each write_some /
// read_some move at most 64 KiB, so a 256 KiB READ reply took four sendmsg
// calls and four turns of the event loop; this one lets the kernel take as
// much as it will in one call.
#pragma once

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <limits>

namespace fleece {

struct TransferAllUnbounded {
  std::size_t operator()(const boost::system::error_code& ec, std::size_t) const {
    return ec ? 0 : std::numeric_limits<std::size_t>::max();
  }
};

}  // namespace fleece
