// FrozenView: the snapshot as a read-only Device.
#include "snapshot/frozen_view.hpp"

#include "cow/memory_store.hpp"
#include "tests/unit/cow/cbw_test_support.hpp"
#include "util/errors.hpp"
#include "util/log.hpp"

#include <doctest/doctest.h>

using namespace fleece;
using namespace fleece::cbwtest;

namespace {

constexpr uint32_t kCs = 8192;
constexpr uint64_t kSize = kCs * 6 + 1000;  // a short last cluster

struct ViewRig {
  std::shared_ptr<SlowDisk> disk = std::make_shared<SlowDisk>(kSize);
  std::shared_ptr<cow::CbwFilter> filter = std::make_shared<cow::CbwFilter>(disk);
  std::shared_ptr<cow::MemoryStore> store = std::make_shared<cow::MemoryStore>(kSize, kCs);
  std::unique_ptr<snapshot::FrozenView> view;
  std::vector<std::byte> old;

  ViewRig() { log::set_level(log::Level::error); }

  Task<void> start() {
    // Clusters 0-2 data, 3 hole, 4-5 data, last (short) cluster data.
    old.assign(kSize, std::byte{0});
    for (uint64_t c : {0, 1, 2, 4, 5, 6}) {
      uint64_t lo = c * kCs, len = std::min<uint64_t>(kCs, kSize - lo);
      auto d = pattern(len, c + 1);
      REQUIRE(!co_await disk->write(lo, cspan(d), {}));
      std::copy(d.begin(), d.end(), old.begin() + static_cast<std::ptrdiff_t>(lo));
    }
    co_await filter->close_gate();
    auto id = co_await filter->add_snapshot(store);
    filter->open_gate();
    REQUIRE(id.has_value());
    view = std::make_unique<snapshot::FrozenView>(filter, *id);
  }
};

std::vector<std::byte> slice(const std::vector<std::byte>& v, uint64_t off, uint64_t len) {
  return {v.begin() + static_cast<std::ptrdiff_t>(off),
          v.begin() + static_cast<std::ptrdiff_t>(off + len)};
}

}  // namespace

TEST_CASE("frozen view: read-only device with the snapshot's bytes") {
  ViewRig rig;
  run([&]() -> Task<void> {
    co_await rig.start();
    auto& v = *rig.view;
    CHECK(v.size() == kSize);
    auto caps = v.capabilities();
    CHECK(caps.read_only);
    CHECK(caps.can_trim);
    CHECK(caps.min_block == 1);
    auto data = pattern(100, 5);
    CHECK(co_await v.write(0, cspan(data), {}) == std::errc::read_only_file_system);
    CHECK(co_await v.write_zeroes(0, 100, {}) == std::errc::read_only_file_system);
    CHECK(!co_await v.flush());
    // The guest overwrites everything through the filter; the view does not move.
    auto fresh = pattern(kSize, 77);
    REQUIRE(!co_await rig.filter->write(0, cspan(fresh), {}));
    std::vector<std::byte> buf(kSize);
    REQUIRE(!co_await v.read(0, buf));
    CHECK(buf == rig.old);
    std::vector<std::byte> odd(333);
    REQUIRE(!co_await v.read(kCs - 100, odd));
    CHECK(odd == slice(rig.old, kCs - 100, 333));
    std::vector<std::byte> past(10);
    CHECK(co_await v.read(kSize - 5, past) == std::errc::invalid_argument);
  });
}

TEST_CASE("frozen view: trim is rounded inward and revokes access") {
  ViewRig rig;
  run([&]() -> Task<void> {
    co_await rig.start();
    auto& v = *rig.view;
    REQUIRE(!co_await v.trim(100, kCs, {}));  // covers no whole cluster
    std::vector<std::byte> buf(kCs);
    REQUIRE(!co_await v.read(0, buf));
    REQUIRE(!co_await v.read(kCs, buf));
    REQUIRE(!co_await v.trim(kCs - 1, kCs + 2, {}));  // exactly cluster 1
    CHECK(co_await v.read(kCs, buf) == Errc::access_revoked);
    CHECK(co_await v.read(kCs - 10, std::span(buf).first(20)) == Errc::access_revoked);
    REQUIRE(!co_await v.read(0, buf));
    CHECK(buf == slice(rig.old, 0, kCs));
    REQUIRE(!co_await v.read(2 * kCs, buf));
    // A trim reaching the end of the disk takes the short last cluster too.
    REQUIRE(!co_await v.trim(6 * kCs, kSize - 6 * kCs, {}));
    std::vector<std::byte> one(1);
    CHECK(co_await v.read(kSize - 1, one) == Errc::access_revoked);
  });
}

TEST_CASE("frozen view: block status says what the snapshot holds") {
  ViewRig rig;
  run([&]() -> Task<void> {
    co_await rig.start();
    auto& v = *rig.view;
    // Cluster 0 copied into the store, cluster 3 (a hole) recorded as zero,
    // cluster 1 discarded; the rest still on the disk.
    auto d = pattern(10, 9);
    REQUIRE(!co_await rig.filter->write(0, cspan(d), {}));
    REQUIRE(!co_await rig.filter->write(3 * kCs, cspan(d), {}));
    REQUIRE(!co_await v.trim(kCs, kCs, {}));
    std::vector<block::Extent> ext;
    REQUIRE(!co_await v.block_status(0, kSize, ext));
    std::vector<std::pair<uint64_t, uint32_t>> got;
    uint64_t total = 0;
    for (auto& e : ext) {
      got.emplace_back(e.length, e.flags);
      total += e.length;
    }
    CHECK(total == kSize);
    using block::kExtentHole;
    using block::kExtentZero;
    std::vector<std::pair<uint64_t, uint32_t>> want = {
        {kCs, 0},                                // store data
        {kCs, kExtentHole | kExtentZero},        // discarded
        {kCs, 0},                                // disk data
        {kCs, kExtentZero},                      // zero cluster in the store
        {kSize - 4 * kCs, 0},                    // disk data
    };
    CHECK(got == want);
    CHECK(ext[0].depth == 1);
    CHECK(ext[1].depth == 0);
    CHECK(ext[2].depth == 2);  // below the one store
    // A sub-range starts exactly at the offset asked for.
    ext.clear();
    REQUIRE(!co_await v.block_status(kCs / 2, kCs, ext));
    REQUIRE(ext.size() == 2);
    CHECK(ext[0].length == kCs / 2);
    CHECK(ext[1].length == kCs / 2);
  });
}

TEST_CASE("frozen view: a stopped snapshot reads as gone") {
  ViewRig rig;
  run([&]() -> Task<void> {
    co_await rig.start();
    REQUIRE(!co_await rig.filter->remove_snapshot(rig.view->id()));
    std::vector<std::byte> buf(10);
    CHECK(co_await rig.view->read(0, buf) == std::errc::no_such_device);
    CHECK(co_await rig.view->trim(0, kCs, {}) == std::errc::no_such_device);
    std::vector<block::Extent> ext;
    CHECK(co_await rig.view->block_status(0, kCs, ext) == std::errc::no_such_device);
  });
}
