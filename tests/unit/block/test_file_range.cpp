// Device::file_range of raw files: offered only for resident pages of a
// page-cached file, and the bytes there are the device's.
#include "block/page_cache.hpp"
#include "block/raw_file.hpp"
#include "block/unique_fd.hpp"
#include "tests/unit/block/block_test_support.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

using namespace fleece::block;
using fleece::block::test::pattern;
using fleece::block::test::run;
using fleece::block::test::TempFile;

namespace {

// Drops the file's pages from the page cache (written back first).
void evict(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  ::fdatasync(fd);
  REQUIRE(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0);
  ::close(fd);
}

}  // namespace

TEST_CASE("file_range: resident pages of a cached raw file, nothing else") {
  constexpr uint64_t kSize = 1 << 20;
  TempFile file(kSize);
  std::string message;
  auto opened = open_raw_file(file.path(), {}, &message);
  REQUIRE(opened);
  auto dev = *opened;
  auto data = pattern(0, kSize, 7);
  REQUIRE(!run(dev->write(0, data, {})));
  evict(file.path());
  // cachestat needs Linux 6.5; on older kernels nothing is offered at all.
  const fleece::block::UniqueFd self(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
  if (!resident(self.get(), 0, 1)) {
    CHECK(!dev->file_range(0, kSize));
    return;
  }
  CHECK(!dev->file_range(0, kSize));  // evicted: sendfile would wait for the disk
  std::vector<std::byte> back(kSize);
  REQUIRE(!run(dev->read(0, back)));
  REQUIRE(back == data);
  auto range = dev->file_range(4096, 65536);
  REQUIRE(range);
  CHECK(range->offset == 4096);
  CHECK(range->keep);
  std::vector<std::byte> via_fd(65536);
  REQUIRE(::pread(range->fd, via_fd.data(), via_fd.size(), off_t(range->offset)) == 65536);
  CHECK(std::equal(via_fd.begin(), via_fd.end(), data.begin() + 4096));
  CHECK(!dev->file_range(kSize - 4096, 8192));  // past the end
  dev.reset();
  CHECK(::fcntl(range->fd, F_GETFD) != -1);  // the range keeps the file open

  auto direct = open_raw_file(file.path(), {.direct = true}, &message);
  if (direct) CHECK(!(*direct)->file_range(0, 4096));  // O_DIRECT bypasses the cache
}
