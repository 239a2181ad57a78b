#include "block/page_cache.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace fleece::block {

namespace {

// Debian 12's kernel headers predate cachestat(2); its ABI is stable
// (include/uapi/linux/mman.h), and 451 is its number on every architecture.
struct CachestatRange {
  uint64_t off;
  uint64_t len;
};
struct Cachestat {
  uint64_t nr_cache;
  uint64_t nr_dirty;
  uint64_t nr_writeback;
  uint64_t nr_evicted;
  uint64_t nr_recently_evicted;
};
constexpr long kSysCachestat = 451;

std::atomic<bool> unsupported{false};

}  // namespace

bool resident(int fd, uint64_t offset, uint64_t length) {
  if (length == 0) return true;
  if (unsupported.load(std::memory_order_relaxed)) return false;
  static const uint64_t page = uint64_t(sysconf(_SC_PAGESIZE));
  CachestatRange range{offset, length};
  Cachestat stat{};
  if (syscall(kSysCachestat, fd, &range, &stat, 0) != 0) {
    if (errno == ENOSYS) unsupported.store(true, std::memory_order_relaxed);
    return false;
  }
  const uint64_t pages = (offset + length + page - 1) / page - offset / page;
  return stat.nr_cache >= pages;
}

}  // namespace fleece::block
