#include "block/raw_file.hpp"

#include "block/buffer.hpp"
#include "block_test_support.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

using namespace fleece::block;
using fleece::block::test::all_zero;
using fleece::block::test::each_backend;
using fleece::block::test::pattern;
using fleece::block::test::run;
using fleece::block::test::TempFile;

namespace {

constexpr uint32_t kHoleZero = kExtentHole | kExtentZero;

std::shared_ptr<Device> open_ok(const std::string& path, RawFileOptions o = {}) {
  std::string message;
  auto r = open_raw_file(path, o, &message);
  INFO(message);
  REQUIRE(r);
  return *r;
}

std::vector<Extent> status(Device& d, uint64_t offset, uint64_t length) {
  std::vector<Extent> out;
  REQUIRE(!run(d.block_status(offset, length, out)));
  return out;
}

// Checks that extents start at offset, are consecutive and non-empty, and
// expands them to one flags value per 4 KiB block of [offset, offset+length).
std::vector<uint32_t> per_block(const std::vector<Extent>& ex, uint64_t length) {
  std::vector<uint32_t> flags;
  uint64_t covered = 0;
  for (const Extent& e : ex) {
    REQUIRE(e.length > 0);
    REQUIRE(e.length % 4096 == 0);
    for (uint64_t i = 0; i < e.length / 4096 && covered < length; ++i, covered += 4096)
      flags.push_back(e.flags);
  }
  return flags;
}

}  // namespace

TEST_CASE("open_raw_file: errors name the problem") {
  std::string message;

  auto missing = open_raw_file("/tmp/fleece-no-such-file-here", {}, &message);
  REQUIRE(!missing);
  CHECK(missing.error() == std::errc::no_such_file_or_directory);
  CHECK(message.find("/tmp/fleece-no-such-file-here") == 0);
  CHECK(message.find("no such file") != std::string::npos);

  auto dir = open_raw_file("/tmp", {.read_only = true}, &message);
  REQUIRE(!dir);
  CHECK(message.find("not a regular file or block device") != std::string::npos);

  auto chr = open_raw_file("/dev/null", {}, &message);
  REQUIRE(!chr);
  CHECK(message.find("not a regular file or block device") != std::string::npos);

  // A FIFO must be refused, not hang in open().
  std::string fifo = "/tmp/fleece-block-test-fifo-" + std::to_string(::getpid());
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  auto f = open_raw_file(fifo, {.read_only = true}, &message);
  ::unlink(fifo.c_str());
  REQUIRE(!f);
  CHECK(message.find("not a regular file or block device") != std::string::npos);

  if (::geteuid() != 0) {  // root ignores permissions
    TempFile file(4096);
    ::chmod(file.path().c_str(), 0400);
    auto denied = open_raw_file(file.path(), {}, &message);
    REQUIRE(!denied);
    CHECK(denied.error() == std::errc::permission_denied);
    CHECK(message.find("permission denied") != std::string::npos);
  }

  // Without an out-parameter the error code still says what happened.
  auto quiet = open_raw_file("/tmp/fleece-no-such-file-here", {});
  CHECK(quiet.error() == std::errc::no_such_file_or_directory);
}

TEST_CASE("raw file: capabilities and size") {
  TempFile file(3 * 1024 * 1024 + 512);
  auto dev = open_ok(file.path());
  CHECK(dev->size() == 3 * 1024 * 1024 + 512);
  Capabilities c = dev->capabilities();
  CHECK(!c.read_only);
  CHECK(c.can_flush);
  CHECK(c.can_fua);
  CHECK(c.can_trim);       // /tmp punches holes (ext4, xfs, tmpfs, btrfs all do)
  CHECK(c.can_fast_zero);
  CHECK(c.can_cache);
  CHECK(c.min_block == 1);
  CHECK(c.preferred_block == 4096);

  auto ro = open_ok(file.path(), {.read_only = true});
  CHECK(ro->capabilities().read_only);
  CHECK(!ro->capabilities().can_trim);
}

TEST_CASE("raw file: write/read round trips at many sizes and offsets") {
  each_backend();
  constexpr uint64_t kSize = 8 * 1024 * 1024;
  TempFile file(kSize);
  auto dev = open_ok(file.path());
  std::vector<std::byte> model(kSize);
  struct Case {
    uint64_t offset;
    std::size_t length;
  };
  const Case cases[] = {{0, 1},          {1, 511},         {4095, 2},         {4096, 4096},
                        {10000, 12345},  {65536, 65536},   {100003, 300007},  {kSize - 1, 1},
                        {kSize - 4096, 4096}, {2u << 20, 4u << 20}, {777, 0}};
  uint8_t seed = 1;
  run([&]() -> Task<void> {
    for (const Case& c : cases) {
      auto data = pattern(c.offset, c.length, seed++);
      CHECK(!co_await dev->write(c.offset, data, {.fua = seed % 3 == 0}));
      std::copy(data.begin(), data.end(), model.begin() + static_cast<std::ptrdiff_t>(c.offset));
      std::vector<std::byte> back(c.length, std::byte{0xcc});
      CHECK(!co_await dev->read(c.offset, back));
      CHECK(back == data);
    }
    // Reads across the boundaries of earlier writes see the model.
    for (uint64_t off : {uint64_t(0), uint64_t(3000), uint64_t(99999), uint64_t(kSize - 70000)}) {
      std::vector<std::byte> back(70000);
      CHECK(!co_await dev->read(off, back));
      CHECK(std::equal(back.begin(), back.end(), model.begin() + static_cast<std::ptrdiff_t>(off)));
    }
    CHECK(!co_await dev->flush());
  }());
  CHECK(file.contents() == model);
}

TEST_CASE("raw file: reads past end of file return zeroes; writes past it grow the file") {
  each_backend();
  TempFile file(10000);
  auto dev = open_ok(file.path());
  run([&]() -> Task<void> {
    auto data = pattern(0, 10000);
    CHECK(!co_await dev->write(0, data, {}));
    std::vector<std::byte> back(16384, std::byte{1});
    CHECK(!co_await dev->read(0, back));
    CHECK(std::equal(data.begin(), data.end(), back.begin()));
    CHECK(all_zero(std::span(back).subspan(10000)));

    auto tail = pattern(20000, 5000);
    CHECK(!co_await dev->write(20000, tail, {.fua = true}));
  }());
  CHECK(dev->size() == 25000);
}

TEST_CASE("raw file: read-only devices refuse changes") {
  each_backend();
  TempFile file(8192);
  auto dev = open_ok(file.path(), {.read_only = true});
  run([&]() -> Task<void> {
    std::vector<std::byte> buf(4096);
    CHECK(!co_await dev->read(0, buf));
    CHECK(co_await dev->write(0, buf, {}) == std::errc::read_only_file_system);
    CHECK(co_await dev->trim(0, 4096, {}) == std::errc::read_only_file_system);
    CHECK(co_await dev->write_zeroes(0, 4096, {}) == std::errc::read_only_file_system);
    CHECK(!co_await dev->flush());
    CHECK(!co_await dev->cache(0, 8192));
  }());
}

TEST_CASE("raw file: trim punches a hole that reads as zeroes") {
  each_backend();
  constexpr uint64_t kSize = 1 << 20;
  TempFile file(kSize);
  auto dev = open_ok(file.path());
  auto data = pattern(0, kSize);
  run([&]() -> Task<void> {
    CHECK(!co_await dev->write(0, data, {}));
    CHECK(!co_await dev->flush());
    CHECK(file.has_data(256 * 1024, 256 * 1024));
    CHECK(!co_await dev->trim(256 * 1024, 256 * 1024, {.fua = true}));
    std::vector<std::byte> back(kSize);
    CHECK(!co_await dev->read(0, back));
    CHECK(std::equal(back.begin(), back.begin() + 256 * 1024, data.begin()));
    CHECK(all_zero(std::span(back).subspan(256 * 1024, 256 * 1024)));
    CHECK(std::equal(back.begin() + 512 * 1024, back.end(), data.begin() + 512 * 1024));
  }());
  CHECK(!file.has_data(256 * 1024, 256 * 1024));
  CHECK(file.allocated_bytes() <= kSize - 256 * 1024);
  auto flags = per_block(status(*dev, 0, kSize), kSize);
  REQUIRE(flags.size() == kSize / 4096);
  for (std::size_t b = 0; b < flags.size(); ++b) {
    bool in_hole = b >= 64 && b < 128;
    CHECK(flags[b] == (in_hole ? kHoleZero : 0u));
  }
}

TEST_CASE("raw file: write_zeroes with and without may_trim, and fast_only") {
  each_backend();
  constexpr uint64_t kSize = 1 << 20;
  TempFile file(kSize);
  auto dev = open_ok(file.path());
  auto data = pattern(0, kSize);
  run([&]() -> Task<void> {
    CHECK(!co_await dev->write(0, data, {}));
    CHECK(!co_await dev->flush());
  }());
  const uint64_t full = file.allocated_bytes();
  REQUIRE(full >= kSize);
  std::vector<std::byte> expect = data;
  auto zero = [&](uint64_t off, uint64_t len) {
    std::fill_n(expect.begin() + static_cast<std::ptrdiff_t>(off), len, std::byte{0});
  };

  SUBCASE("may_trim: a hole") {
    CHECK(!run(dev->write_zeroes(0, 512 * 1024, {.may_trim = true})));
    zero(0, 512 * 1024);
    CHECK(!file.has_data(0, 512 * 1024));
    CHECK(file.allocated_bytes() <= full - 512 * 1024);
  }
  SUBCASE("without may_trim: zeroes that stay allocated") {
    CHECK(!run(dev->write_zeroes(0, 512 * 1024, {.fua = true})));
    zero(0, 512 * 1024);
    CHECK(file.allocated_bytes() >= full);
  }
  SUBCASE("fast_only succeeds where the fs can zero fast") {
    REQUIRE(dev->capabilities().can_fast_zero);
    CHECK(!run(dev->write_zeroes(0, 256 * 1024, {.fast_only = true})));
    CHECK(!run(dev->write_zeroes(256 * 1024, 256 * 1024, {.may_trim = true, .fast_only = true})));
    zero(0, 512 * 1024);
  }
  SUBCASE("unaligned ranges") {
    CHECK(!run(dev->write_zeroes(1000, 300000, {.may_trim = true})));
    CHECK(!run(dev->write_zeroes(400001, 99999, {})));
    zero(1000, 300000);
    zero(400001, 99999);
  }
  std::vector<std::byte> back(kSize);
  CHECK(!run(dev->read(0, back)));
  CHECK(back == expect);
  CHECK(file.contents() == expect);
}

TEST_CASE("raw file: write_zeroes where the fs has no ZERO_RANGE (tmpfs)") {
  // tmpfs punches holes but has no FALLOC_FL_ZERO_RANGE: zeroing without a
  // hole then takes the punch + allocate path, which is still fast.
  each_backend();
  TempFile file(1 << 20, "/dev/shm");
  auto dev = open_ok(file.path());
  run([&]() -> Task<void> {
    auto data = pattern(0, 1 << 20);
    CHECK(!co_await dev->write(0, data, {}));
    const uint64_t before = file.allocated_bytes();
    CHECK(!co_await dev->write_zeroes(4096, 65536, {}));
    CHECK(!co_await dev->write_zeroes(131072, 65536, {.fast_only = true}));
    CHECK(file.allocated_bytes() == before);  // allocated again after the punch
    CHECK(dev->capabilities().can_fast_zero);
    std::vector<std::byte> back(1 << 20);
    CHECK(!co_await dev->read(0, back));
    CHECK(all_zero(std::span(back).subspan(4096, 65536)));
    CHECK(all_zero(std::span(back).subspan(131072, 65536)));
    CHECK(std::equal(back.begin(), back.begin() + 4096, data.begin()));
    CHECK(std::equal(back.begin() + 69632, back.begin() + 131072, data.begin() + 69632));
    CHECK(std::equal(back.begin() + 196608, back.end(), data.begin() + 196608));
  }());
}

TEST_CASE("raw file: block_status of a sparse file matches its layout") {
  each_backend();
  constexpr uint64_t kSize = 4 << 20;  // 1024 blocks of 4 KiB
  TempFile file(kSize);
  auto dev = open_ok(file.path());
  // Data at blocks [16,32), [100,101), [512,600), [1000,1024).
  const std::pair<uint64_t, uint64_t> runs[] = {{16, 32}, {100, 101}, {512, 600}, {1000, 1024}};
  run([&]() -> Task<void> {
    for (auto [b, e] : runs) {
      auto data = pattern(b * 4096, (e - b) * 4096);
      CHECK(!co_await dev->write(b * 4096, data, {}));
    }
    CHECK(!co_await dev->flush());
  }());
  auto expect = [&](uint64_t block) {
    for (auto [b, e] : runs)
      if (block >= b && block < e) return 0u;
    return kHoleZero;
  };
  auto ex = status(*dev, 0, kSize);
  CHECK(ex.size() == 8);  // hole, data, alternating, merged
  auto flags = per_block(ex, kSize);
  REQUIRE(flags.size() == 1024);
  for (uint64_t b = 0; b < 1024; ++b) CHECK(flags[b] == expect(b));
  for (const Extent& e : ex) CHECK(e.depth == (e.flags & kExtentHole ? 0u : 1u));

  // A window starting inside a data run.
  ex = status(*dev, 20 * 4096, 100 * 4096);
  REQUIRE(ex.size() == 4);
  CHECK(ex[0].length == 12 * 4096);
  CHECK(ex[0].flags == 0);
  CHECK(ex[1].length == 68 * 4096);
  CHECK(ex[1].flags == kHoleZero);
  CHECK(ex[2].length == 4096);
  CHECK(ex[2].flags == 0);
  CHECK(ex[3].length == 19 * 4096);
  CHECK(ex[3].flags == kHoleZero);

  // Past end of file: a hole.
  ex = status(*dev, kSize, 4096);
  REQUIRE(ex.size() == 1);
  CHECK(ex[0].flags == kHoleZero);
}

TEST_CASE("raw file: block_status remembers a data region, and a punch inside it is seen") {
  // The remembered region answers repeated walks without lseek; trim and
  // write_zeroes with may_trim must make the holes they punch show again.
  each_backend();
  for (const char* dir : {"/tmp", "/dev/shm"}) {
    CAPTURE(dir);
    constexpr uint64_t kSize = 2 << 20;
    TempFile file(kSize, dir);
    auto dev = open_ok(file.path());
    run([&]() -> Task<void> {
      auto data = pattern(0, kSize);
      CHECK(!co_await dev->write(0, data, {}));
    }());
    for (uint64_t off = 0; off < kSize; off += 64 << 10) {  // a client's walk, twice
      auto ex = status(*dev, off, 64 << 10);
      REQUIRE(ex.size() == 1);
      CHECK(ex[0].flags == 0);
      CHECK(status(*dev, off, 64 << 10)[0].flags == 0);
    }
    run([&]() -> Task<void> {
      CHECK(!co_await dev->trim(256 << 10, 64 << 10, {}));
      CHECK(!co_await dev->write_zeroes(1 << 20, 128 << 10, {.may_trim = true}));
    }());
    auto flags = per_block(status(*dev, 0, kSize), kSize);
    REQUIRE(flags.size() == kSize / 4096);
    for (uint64_t b = 0; b < flags.size(); ++b) {
      const uint64_t at = b * 4096;
      const bool punched = (at >= (256 << 10) && at < (320 << 10)) || (at >= (1 << 20) && at < (1152 << 10));
      CHECK_MESSAGE(flags[b] == (punched ? kHoleZero : 0u), "block ", b);
    }
    // Writing into a hole makes it data again (data is never cached wrongly as hole).
    run([&]() -> Task<void> {
      auto data = pattern(256 << 10, 64 << 10);
      CHECK(!co_await dev->write(256 << 10, data, {}));
    }());
    CHECK(status(*dev, 256 << 10, 64 << 10)[0].flags == 0);
  }
}

TEST_CASE("raw file: block_status stops after a bounded number of extents") {
  TempFile file(3000 * 8192);
  auto dev = open_ok(file.path());
  run([&]() -> Task<void> {
    auto data = pattern(0, 4096);
    for (uint64_t i = 0; i < 3000; ++i) CHECK(!co_await dev->write(i * 8192, data, {}));
  }());
  auto ex = status(*dev, 0, 3000 * 8192);
  CHECK(ex.size() <= 1024);
  CHECK(ex.size() >= 100);
  uint64_t covered = 0;
  for (std::size_t i = 0; i < ex.size(); ++i) {
    CHECK(ex[i].flags == (i % 2 == 0 ? 0u : kHoleZero));
    CHECK(ex[i].length == 4096);
    covered += ex[i].length;
  }
  CHECK(covered < 3000 * 8192);
}

TEST_CASE("raw file: cache=none (O_DIRECT) with aligned buffers") {
  each_backend();
  std::optional<TempFile> file;
  std::shared_ptr<Device> dev;
  std::string message;
  for (const char* dir : {"/tmp", "/var/tmp"}) {
    file.emplace(1 << 20, dir);
    auto r = open_raw_file(file->path(), {.direct = true}, &message);
    if (r) {
      dev = *r;
      break;
    }
    CHECK(message.find("O_DIRECT") != std::string::npos);
  }
  if (!dev) {
    MESSAGE("no file system here accepts O_DIRECT; skipped");
    return;
  }
  CHECK(dev->capabilities().min_block == 4096);
  run([&]() -> Task<void> {
    AlignedBuffer data(64 * 1024);
    auto p = pattern(8192, 64 * 1024);
    std::copy(p.begin(), p.end(), data.data());
    CHECK(!co_await dev->write(8192, data.span(), {.fua = true}));
    AlignedBuffer back = AlignedBuffer::zeroed(64 * 1024);
    CHECK(!co_await dev->read(8192, back.span()));
    CHECK(std::equal(p.begin(), p.end(), back.data()));
    // Misaligned buffers are refused by the kernel, not corrupted.
    CHECK(co_await dev->read(8192, back.span().subspan(1, 4096)) == std::errc::invalid_argument);
    CHECK(!co_await dev->write_zeroes(8192, 4096, {}));
    CHECK(!co_await dev->trim(12288, 4096, {}));
    CHECK(!co_await dev->read(8192, back.span()));
    CHECK(all_zero(back.span().first(8192)));
    CHECK(std::equal(p.begin() + 8192, p.end(), back.data() + 8192));
    CHECK(!co_await dev->flush());
  }());
}

TEST_CASE("raw file: O_DIRECT read of a file whose size is not aligned") {
  TempFile file(4096 + 100, "/var/tmp");
  auto r = open_raw_file(file.path(), {.direct = true});
  if (!r) {
    MESSAGE("O_DIRECT refused; skipped");
    return;
  }
  auto dev = *r;
  run([&]() -> Task<void> {
    AlignedBuffer buf(8192);
    std::fill(buf.data(), buf.data() + 8192, std::byte{0x77});
    CHECK(!co_await dev->read(0, buf.span()));
    CHECK(all_zero(buf.span()));
  }());
}

TEST_CASE("raw file: concurrent operations from two io_contexts on two threads") {
  each_backend();
  constexpr int kBlocks = 256;
  constexpr uint64_t kBlock = 16384;
  TempFile file(kBlocks * kBlock);
  auto dev = open_ok(file.path());
  std::atomic<int> failures{0};
  auto worker = [&](int parity) {
    boost::asio::io_context ctx;
    for (int i = parity; i < kBlocks; i += 2) {
      boost::asio::co_spawn(ctx, [&, i]() -> Task<void> {
        const uint64_t off = uint64_t(i) * kBlock;
        auto data = pattern(off, kBlock, uint8_t(parity + 5));
        if (co_await dev->write(off, data, {.fua = i % 16 == 0})) ++failures;
        std::vector<std::byte> back(kBlock);
        if (co_await dev->read(off, back)) ++failures;
        if (back != data) ++failures;
        if (i % 8 == 1) {  // some trims and zeroes in the mix
          if (co_await dev->trim(off, kBlock / 2, {})) ++failures;
          if (co_await dev->write_zeroes(off + kBlock / 2, kBlock / 2, {})) ++failures;
          if (co_await dev->read(off, back)) ++failures;
          if (!all_zero(back)) ++failures;
        }
        std::vector<Extent> ex;
        if (co_await dev->block_status(off, kBlock, ex)) ++failures;
        if (ex.empty()) ++failures;
        if (i % 32 == 0 && co_await dev->flush()) ++failures;
      }, boost::asio::detached);
    }
    ctx.run();
  };
  std::thread a(worker, 0), b(worker, 1);
  a.join();
  b.join();
  CHECK(failures == 0);
  auto disk = file.contents();
  for (int i = 0; i < kBlocks; ++i) {
    std::span<const std::byte> got(disk.data() + i * kBlock, kBlock);
    if (i % 8 == 1) {
      CHECK(all_zero(got));
    } else {
      auto want = pattern(uint64_t(i) * kBlock, kBlock, uint8_t(i % 2 + 5));
      CHECK(std::equal(want.begin(), want.end(), got.begin()));
    }
  }
}
