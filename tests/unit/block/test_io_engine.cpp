#include "block/io_engine.hpp"

#include "block/unique_fd.hpp"
#include "block_test_support.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/this_coro.hpp>

#include <doctest/doctest.h>

#include <fcntl.h>
#include <linux/falloc.h>

#include <thread>

using namespace fleece::block;
using fleece::block::test::all_zero;
using fleece::block::test::each_backend;
using fleece::block::test::pattern;
using fleece::block::test::run;
using fleece::block::test::TempFile;

namespace {
UniqueFd open_rw(const TempFile& f) { return UniqueFd(::open(f.path().c_str(), O_RDWR | O_CLOEXEC)); }
}  // namespace

TEST_CASE("io: backend selection") {
  auto b = each_backend();
  CHECK(io::backend() == b);
  CHECK(io::backend_name() == (b == io::Backend::io_uring ? "io_uring" : "thread-pool"));
}

TEST_CASE("io: pread/pwrite and vectored I/O round trip") {
  each_backend();
  TempFile file(1 << 20);
  UniqueFd fd = open_rw(file);
  REQUIRE(fd);
  run([&]() -> Task<void> {
    auto data = pattern(12345, 70000);
    auto w = co_await io::pwrite(fd.get(), data, 12345);
    REQUIRE(w);
    CHECK(*w == data.size());

    std::vector<std::byte> back(70000);
    auto r = co_await io::pread(fd.get(), back, 12345);
    REQUIRE(r);
    CHECK(*r == back.size());
    CHECK(back == data);

    // Vectored: three pieces written at 500000, read back as two.
    auto a = pattern(500000, 1000, 3), b = pattern(501000, 3000, 3), c = pattern(504000, 96, 3);
    iovec wv[] = {{a.data(), a.size()}, {b.data(), b.size()}, {c.data(), c.size()}};
    auto wr = co_await io::pwritev(fd.get(), wv, 500000, RWF_DSYNC);
    REQUIRE(wr);
    CHECK(*wr == 4096);
    std::vector<std::byte> x(2048), y(2048);
    iovec rv[] = {{x.data(), x.size()}, {y.data(), y.size()}};
    auto rr = co_await io::preadv(fd.get(), rv, 500000);
    REQUIRE(rr);
    CHECK(*rr == 4096);
    CHECK(std::equal(x.begin(), x.begin() + 1000, a.begin()));
    CHECK(std::equal(x.begin() + 1000, x.end(), b.begin()));
    CHECK(std::equal(y.begin(), y.begin() + 1952, b.begin() + 1048));
    CHECK(std::equal(y.begin() + 1952, y.end(), c.begin()));

    // The cached path returns the same bytes (the data is in the page cache).
    std::vector<std::byte> cached(70000);
    auto rc = co_await io::pread_cached(fd.get(), cached, 12345);
    REQUIRE(rc);
    CHECK(*rc == cached.size());
    CHECK(cached == data);

    CHECK(!co_await io::fdatasync(fd.get()));
    CHECK(!co_await io::fsync(fd.get()));
    CHECK(!co_await io::fadvise(fd.get(), 0, 65536, POSIX_FADV_WILLNEED));
  }());
  auto disk = file.contents();
  auto data = pattern(12345, 70000);
  CHECK(std::equal(data.begin(), data.end(), disk.begin() + 12345));
}

TEST_CASE("io: short reads at end of file, read_exact and write_all") {
  each_backend();
  TempFile file(10000);
  UniqueFd fd = open_rw(file);
  run([&]() -> Task<void> {
    auto data = pattern(0, 10000);
    CHECK(!co_await io::write_all(fd.get(), data, 0));
    std::vector<std::byte> buf(8192, std::byte{0x55});
    auto r = co_await io::pread(fd.get(), buf, 8192);
    REQUIRE(r);
    CHECK(*r == 10000 - 8192);  // short: end of file
    auto eof = co_await io::pread(fd.get(), buf, 20000);
    REQUIRE(eof);
    CHECK(*eof == 0);
    auto eof2 = co_await io::pread_cached(fd.get(), buf, 20000);
    REQUIRE(eof2);
    CHECK(*eof2 == 0);

    // read_exact fills past end of file with zeroes.
    std::fill(buf.begin(), buf.end(), std::byte{0x55});
    CHECK(!co_await io::read_exact(fd.get(), buf, 8192));
    CHECK(std::equal(buf.begin(), buf.begin() + 1808, data.begin() + 8192));
    CHECK(all_zero(std::span(buf).subspan(1808)));
    std::fill(buf.begin(), buf.end(), std::byte{0x55});
    CHECK(!co_await io::read_exact(fd.get(), buf, 4096, /*cached_first=*/true));
    CHECK(std::equal(buf.begin(), buf.begin() + 5904, data.begin() + 4096));
    CHECK(all_zero(std::span(buf).subspan(5904)));
  }());
}

TEST_CASE("io: errors come back as error codes") {
  each_backend();
  run([&]() -> Task<void> {
    std::vector<std::byte> buf(4096);
    auto r = co_await io::pread(-1, buf, 0);
    REQUIRE(!r);
    CHECK(r.error() == std::errc::bad_file_descriptor);
    auto w = co_await io::pwrite(12345678, buf, 0);
    REQUIRE(!w);
    CHECK(w.error() == std::errc::bad_file_descriptor);
    CHECK(co_await io::fdatasync(-1) == std::errc::bad_file_descriptor);
    CHECK(co_await io::fallocate(-1, 0, 0, 4096) == std::errc::bad_file_descriptor);
    CHECK(co_await io::read_exact(-1, buf, 0) == std::errc::bad_file_descriptor);

    TempFile ro_file(4096);
    UniqueFd ro(::open(ro_file.path().c_str(), O_RDONLY | O_CLOEXEC));
    auto denied = co_await io::pwrite(ro.get(), buf, 0);
    REQUIRE(!denied);
    CHECK(denied.error() == std::errc::bad_file_descriptor);
  }());
}

TEST_CASE("io: fallocate punches holes and run_blocking runs off the loop") {
  each_backend();
  TempFile file(0);
  UniqueFd fd = open_rw(file);
  run([&]() -> Task<void> {
    auto data = pattern(0, 1 << 20);
    CHECK(!co_await io::write_all(fd.get(), data, 0));
    CHECK(!co_await io::fdatasync(fd.get()));
    uint64_t before = file.allocated_bytes();
    CHECK(before >= (1u << 20));
    CHECK(!co_await io::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 512 * 1024));
    CHECK(file.allocated_bytes() <= before - 512 * 1024);
    CHECK(!file.has_data(0, 512 * 1024));
    std::vector<std::byte> buf(512 * 1024);
    CHECK(!co_await io::read_exact(fd.get(), buf, 0));
    CHECK(all_zero(buf));

    auto loop_thread = std::this_thread::get_id();
    std::thread::id pool_thread;
    int64_t r = co_await io::run_blocking([&]() -> int64_t {
      pool_thread = std::this_thread::get_id();
      return 42;
    });
    CHECK(r == 42);
    CHECK(pool_thread != loop_thread);
    CHECK(std::this_thread::get_id() == loop_thread);  // resumed on the loop
  }());
}

TEST_CASE("io: many operations in flight, from two io_contexts on two threads") {
  each_backend();
  constexpr int kBlocks = 512;  // 4 KiB blocks; each thread owns every other one
  TempFile file(kBlocks * 4096);
  UniqueFd fd = open_rw(file);
  std::atomic<int> failures{0};

  auto worker = [&](int parity) {
    boost::asio::io_context ctx;
    std::vector<std::vector<std::byte>> bufs(kBlocks);
    std::atomic<int> pending{0};
    auto loop_thread = std::this_thread::get_id();
    // All writes in flight at once, then all reads.
    for (int i = parity; i < kBlocks; i += 2) {
      ++pending;
      boost::asio::co_spawn(ctx, [&, i]() -> Task<void> {
        auto data = pattern(uint64_t(i) * 4096, 4096, uint8_t(parity + 1));
        if (co_await io::write_all(fd.get(), data, uint64_t(i) * 4096, i % 7 == 0 ? RWF_DSYNC : 0))
          ++failures;
        if (std::this_thread::get_id() != loop_thread) ++failures;
        --pending;
      }, boost::asio::detached);
    }
    ctx.run();
    ctx.restart();
    for (int i = parity; i < kBlocks; i += 2) {
      boost::asio::co_spawn(ctx, [&, i]() -> Task<void> {
        bufs[i].resize(4096);
        if (co_await io::read_exact(fd.get(), bufs[i], uint64_t(i) * 4096)) ++failures;
        if (bufs[i] != pattern(uint64_t(i) * 4096, 4096, uint8_t(parity + 1))) ++failures;
      }, boost::asio::detached);
    }
    ctx.run();
    if (pending != 0) ++failures;
  };
  std::thread a(worker, 0), b(worker, 1);
  a.join();
  b.join();
  CHECK(failures == 0);
  auto disk = file.contents();
  REQUIRE(disk.size() == kBlocks * 4096);
  for (int i = 0; i < kBlocks; ++i) {
    auto want = pattern(uint64_t(i) * 4096, 4096, uint8_t(i % 2 + 1));
    REQUIRE(std::equal(want.begin(), want.end(), disk.begin() + i * 4096));
  }
}

TEST_CASE("io: an io_context destroyed with operations in flight cleans up") {
  each_backend();
  TempFile file(1 << 20);
  UniqueFd fd = open_rw(file);
  int finished = 0;
  {
    boost::asio::io_context ctx;
    for (int i = 0; i < 64; ++i) {
      boost::asio::co_spawn(ctx, [&, i]() -> Task<void> {
        std::vector<std::byte> buf(16384);
        co_await io::read_exact(fd.get(), buf, uint64_t(i) * 16384);
        ++finished;
      }, boost::asio::detached);
    }
    ctx.run_one();  // starts some, completes at most one
  }  // destroyed here: pending handlers are dropped, nothing leaks (ASan)
  CHECK(finished <= 64);
}
