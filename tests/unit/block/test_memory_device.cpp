#include "block/memory_device.hpp"

#include "block_test_support.hpp"

#include <doctest/doctest.h>

using namespace fleece::block;
using fleece::block::test::all_zero;
using fleece::block::test::pattern;
using fleece::block::test::run;

namespace {

std::vector<Extent> status(Device& d, uint64_t offset, uint64_t length) {
  std::vector<Extent> out;
  auto ec = run(d.block_status(offset, length, out));
  REQUIRE(!ec);
  return out;
}

std::vector<std::byte> read(Device& d, uint64_t offset, std::size_t length) {
  std::vector<std::byte> out(length, std::byte{0xee});
  REQUIRE(!run(d.read(offset, out)));
  return out;
}

constexpr uint32_t kHoleZero = kExtentHole | kExtentZero;

}  // namespace

TEST_CASE("MemoryDevice: starts as one hole reading zeroes") {
  auto dev = make_memory_device(1 << 20);
  CHECK(dev->size() == (1u << 20));
  CHECK(dev->capabilities().can_trim);
  CHECK(all_zero(read(*dev, 0, 1 << 20)));
  auto ex = status(*dev, 0, 1 << 20);
  REQUIRE(ex.size() == 1);
  CHECK(ex[0].length == (1u << 20));
  CHECK(ex[0].flags == kHoleZero);
  CHECK(ex[0].depth == 0);
}

TEST_CASE("MemoryDevice: writes read back and allocate the blocks they touch") {
  MemoryDevice dev(64 * 1024);
  auto data = pattern(5000, 5000);
  REQUIRE(!run(dev.write(5000, data, {})));
  CHECK(read(dev, 5000, 5000) == data);
  CHECK(all_zero(read(dev, 0, 5000)));
  CHECK(all_zero(read(dev, 10000, 64 * 1024 - 10000)));

  // 5000..10000 touches blocks 1 and 2 (4096..12288).
  auto ex = status(dev, 0, 64 * 1024);
  REQUIRE(ex.size() == 3);
  CHECK(ex[0].length == 4096);
  CHECK(ex[0].flags == kHoleZero);
  CHECK(ex[1].length == 8192);
  CHECK(ex[1].flags == 0);
  CHECK(ex[1].depth == 1);
  CHECK(ex[2].length == 64 * 1024 - 12288);
  CHECK(ex[2].flags == kHoleZero);

  // A query starting mid-extent starts at the offset asked for.
  ex = status(dev, 6000, 100);
  REQUIRE(ex.size() == 1);
  CHECK(ex[0].length == 100);
  CHECK(ex[0].flags == 0);
  CHECK(dev.writes() == 1);
}

TEST_CASE("MemoryDevice: trim and write_zeroes") {
  MemoryDevice dev(32 * 1024);
  auto data = pattern(0, 32 * 1024);
  REQUIRE(!run(dev.write(0, data, {})));

  SUBCASE("trim zeroes and frees only whole blocks") {
    REQUIRE(!run(dev.trim(1000, 10000, {})));  // whole block: 4096..8192
    auto got = read(dev, 0, 32 * 1024);
    CHECK(std::equal(got.begin(), got.begin() + 1000, data.begin()));
    CHECK(all_zero(std::span(got).subspan(1000, 10000)));
    CHECK(std::equal(got.begin() + 11000, got.end(), data.begin() + 11000));
    CHECK(dev.allocated(0));
    CHECK(!dev.allocated(4096));
    CHECK(dev.allocated(8192));  // partly trimmed, still allocated
  }
  SUBCASE("write_zeroes with may_trim frees, without keeps allocated") {
    REQUIRE(!run(dev.write_zeroes(0, 8192, {.may_trim = true})));
    REQUIRE(!run(dev.write_zeroes(8192, 8192, {.may_trim = false})));
    CHECK(all_zero(read(dev, 0, 16384)));
    CHECK(!dev.allocated(0));
    CHECK(!dev.allocated(4096));
    CHECK(dev.allocated(8192));
    CHECK(dev.allocated(12288));
    auto ex = status(dev, 0, 32 * 1024);
    REQUIRE(ex.size() == 2);
    CHECK(ex[0].length == 8192);
    CHECK(ex[0].flags == kHoleZero);
    CHECK(ex[1].flags == 0);
  }
  SUBCASE("a short last block is freed when the range reaches the end") {
    MemoryDevice odd(10000);
    REQUIRE(!run(odd.write(0, pattern(0, 10000), {})));
    REQUIRE(!run(odd.trim(8192, 10000 - 8192, {})));
    CHECK(!odd.allocated(8192));
    CHECK(odd.allocated(4096));
  }
}

TEST_CASE("MemoryDevice: range checks, read-only and fault injection") {
  MemoryDevice dev(8192);
  std::vector<std::byte> buf(4096);
  CHECK(run(dev.read(8192 - 100, buf)) == std::errc::invalid_argument);
  CHECK(run(dev.write(uint64_t(-1), buf, {})) == std::errc::invalid_argument);
  CHECK(!run(dev.read(4096, buf)));

  dev.set_error(MemoryDevice::Op::write, std::make_error_code(std::errc::io_error));
  CHECK(run(dev.write(0, buf, {})) == std::errc::io_error);
  CHECK(run(dev.trim(0, 4096, {})) == std::errc::io_error);
  CHECK(!run(dev.read(0, buf)));  // reads unaffected
  dev.set_error(MemoryDevice::Op::write, {});
  CHECK(!run(dev.write(0, buf, {})));

  dev.set_error(MemoryDevice::Op::flush, std::make_error_code(std::errc::no_space_on_device));
  CHECK(run(dev.flush()) == std::errc::no_space_on_device);
  dev.set_error(MemoryDevice::Op::flush, {});
  CHECK(!run(dev.flush()));
  CHECK(dev.flushes() == 1);

  Capabilities ro = MemoryDevice::default_capabilities();
  ro.read_only = true;
  MemoryDevice rodev(8192, ro);
  CHECK(run(rodev.write(0, buf, {})) == std::errc::read_only_file_system);
  CHECK(!run(rodev.read(0, buf)));
}
