#include "block/blocking_pool.hpp"

#include <algorithm>
#include <thread>

namespace fleece::block::detail {

boost::asio::thread_pool& io_thread_pool() {
  // Each blocking call holds a thread, so the pool is sized for queue depth,
  // not for CPU count; 16 threads keep a fast SSD busy for buffered I/O.
  static boost::asio::thread_pool pool(
      std::clamp<std::size_t>(std::thread::hardware_concurrency() * 4, 8, 16));
  return pool;
}

}  // namespace fleece::block::detail
