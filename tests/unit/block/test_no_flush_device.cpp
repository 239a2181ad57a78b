#include "block/no_flush_device.hpp"

#include "block/memory_device.hpp"
#include "block_test_support.hpp"

#include <doctest/doctest.h>

using namespace fleece::block;
using fleece::block::test::pattern;
using fleece::block::test::run;

namespace {

// Passes everything to a MemoryDevice and counts what asked for durability.
class DurabilityProbe final : public Device {
 public:
  explicit DurabilityProbe(uint64_t size) : mem_(size) {}
  int flushes = 0;
  int fua_ops = 0;

  uint64_t size() const override { return mem_.size(); }
  Capabilities capabilities() const override { return mem_.capabilities(); }
  Task<std::error_code> read(uint64_t offset, std::span<std::byte> out) override {
    return mem_.read(offset, out);
  }
  Task<std::error_code> write(uint64_t offset, std::span<const std::byte> data,
                              WriteFlags flags) override {
    fua_ops += flags.fua;
    return mem_.write(offset, data, flags);
  }
  Task<std::error_code> write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags) override {
    fua_ops += flags.fua;
    return mem_.write_zeroes(offset, length, flags);
  }
  Task<std::error_code> trim(uint64_t offset, uint64_t length, WriteFlags flags) override {
    fua_ops += flags.fua;
    return mem_.trim(offset, length, flags);
  }
  Task<std::error_code> flush() override {
    ++flushes;
    return mem_.flush();
  }
  Task<std::error_code> block_status(uint64_t offset, uint64_t length,
                                     std::vector<Extent>& out) override {
    return mem_.block_status(offset, length, out);
  }

 private:
  MemoryDevice mem_;
};

std::vector<std::byte> read(Device& d, uint64_t offset, std::size_t length) {
  std::vector<std::byte> out(length);
  REQUIRE(!run(d.read(offset, out)));
  return out;
}

}  // namespace

TEST_CASE("without_flush: data goes below, flushes and FUA do not") {
  auto probe = std::make_shared<DurabilityProbe>(1 << 20);
  auto dev = without_flush(probe);
  CHECK(dev->size() == (1u << 20));

  const auto data = pattern(4096, 8192);
  REQUIRE(!run(dev->write(4096, data, WriteFlags{.fua = true})));
  REQUIRE(!run(dev->write_zeroes(65536, 4096, ZeroFlags{.fua = true})));
  REQUIRE(!run(dev->trim(131072, 4096, WriteFlags{.fua = true})));
  REQUIRE(!run(dev->flush()));

  CHECK(probe->flushes == 0);
  CHECK(probe->fua_ops == 0);
  // What was written is below, for any other reader of the file.
  CHECK(read(*probe, 4096, 8192) == data);
  CHECK(read(*dev, 4096, 8192) == data);
  std::vector<Extent> ex;
  REQUIRE(!run(dev->block_status(4096, 8192, ex)));
  REQUIRE(!ex.empty());
  CHECK(ex[0].flags == 0);
}
