// Qcow2ClusterStore: the filter's stores as real qcow2 images, checked with
// qemu-img: each store, read through its backing chain, is its snapshot.
#include "cow/cbw_filter.hpp"
#include "cow/cbw_qcow2_store.hpp"
#include "tests/unit/cow/cbw_test_support.hpp"
#include "tests/unit/cow/qcow2_test_support.hpp"
#include "util/log.hpp"

#include <doctest/doctest.h>

using namespace fleece;
using fleece::cbwtest::run;
using fleece::cbwtest::SlowDisk;
using fleece::cbwtest::Task;
namespace qt = fleece::cow::test;

namespace {

constexpr uint32_t kCs = 65536;
constexpr uint64_t kClusters = 12;
constexpr uint64_t kSize = kCs * kClusters;

std::vector<std::byte> slice(const std::vector<std::byte>& v, uint64_t off, uint64_t len) {
  return {v.begin() + static_cast<std::ptrdiff_t>(off),
          v.begin() + static_cast<std::ptrdiff_t>(off + len)};
}

Task<std::shared_ptr<cow::Qcow2ClusterStore>> make_store(std::shared_ptr<qt::GrowingFile> file,
                                                         std::string name,
                                                         uint32_t granularity = 0,
                                                         uint64_t size = kSize) {
  // Named strings: GCC 12 destroys temporaries inside co_await twice.
  std::string backing = "disk.raw", format = "raw";
  auto st = co_await cow::Qcow2ClusterStore::create(file, name, size, kCs, granularity, backing,
                                                    format);
  REQUIRE(st.has_value());
  co_return *st;
}

}  // namespace

TEST_CASE("qcow2 store: cluster operations map onto the image") {
  log::set_level(log::Level::error);
  run([&]() -> Task<void> {
    auto file = std::make_shared<qt::GrowingFile>();
    std::string name = "st.qcow2";
    auto st = co_await make_store(file, name);
    CHECK(st->size() == kSize);
    CHECK(st->cluster_size() == kCs);
    CHECK(st->cluster_count() == kClusters);
    CHECK(st->format() == "qcow2");
    for (uint64_t c = 0; c < kClusters; ++c) CHECK(st->state(c) == cow::ClusterState::absent);
    auto d = cbwtest::pattern(kCs, 3);
    REQUIRE(!co_await st->write_cluster(2, cbwtest::cspan(d)));
    CHECK(st->state(2) == cow::ClusterState::data);
    CHECK(st->stored_bytes() == kCs);
    std::vector<std::byte> part(100);
    REQUIRE(!co_await st->read(2, 500, part));
    CHECK(part == slice(d, 500, 100));
    REQUIRE(!co_await st->mark_zero(4));
    CHECK(st->state(4) == cow::ClusterState::zero);
    REQUIRE(!co_await st->read(4, 0, part));
    CHECK(part == std::vector<std::byte>(100));
    REQUIRE(!co_await st->discard(2));
    CHECK(st->state(2) == cow::ClusterState::zero);
    CHECK(st->stored_bytes() == 0);
    const std::string next = "next.qcow2", next_format = "qcow2";
    REQUIRE(!co_await st->set_backing(next, next_format));
    CHECK(st->image()->backing_file() == "next.qcow2");
    CHECK(st->image()->backing_format() == "qcow2");
  });
}

TEST_CASE("qcow2 stores under the filter: qemu-img reads each store chain as its snapshot") {
  log::set_level(log::Level::error);
  if (qt::shell("command -v qemu-img").first != 0) {
    MESSAGE("qemu-img not installed: skipped");
    return;
  }
  qt::TempDir dir;
  auto disk = std::make_shared<SlowDisk>(kSize);
  auto filter = std::make_shared<cow::CbwFilter>(disk, cow::CbwFilterOptions{"disk.raw", "raw"});
  auto f1 = std::make_shared<qt::GrowingFile>();
  auto f2 = std::make_shared<qt::GrowingFile>();
  std::vector<std::byte> image1, image2;
  cow::SnapshotId s1 = 0, s2 = 0;
  run([&]() -> Task<void> {
    // D: data everywhere except cluster 3 (a hole).
    for (uint64_t c = 0; c < kClusters; ++c) {
      if (c == 3) continue;
      auto d = cbwtest::pattern(kCs, 10 + c);
      REQUIRE(!co_await disk->write(c * kCs, cbwtest::cspan(d), {}));
    }
    image1 = disk->contents();
    std::string n1 = "st1.qcow2", n2 = "st2.qcow2";
    auto st1 = co_await make_store(f1, n1);
    co_await filter->close_gate();
    s1 = *co_await filter->add_snapshot(st1);
    filter->open_gate();
    auto w = cbwtest::pattern(2 * kCs, 99);
    REQUIRE(!co_await filter->write(kCs / 2, cbwtest::cspan(w), {}));  // clusters 0..1, into St1

    image2 = disk->contents();
    auto st2 = co_await make_store(f2, n2);
    co_await filter->close_gate();
    s2 = *co_await filter->add_snapshot(st2);
    filter->open_gate();
    CHECK(st1->image()->backing_file() == "st2.qcow2");
    auto w3 = cbwtest::pattern(3 * kCs, 7);
    REQUIRE(!co_await filter->write(kCs, cbwtest::cspan(w3), {}));  // clusters 1..3; 3 a hole
    REQUIRE(!co_await filter->discard_frozen(s2, 5 * kCs, kCs));
    REQUIRE(!co_await filter->write(5 * kCs + 7, cbwtest::cspan(w), {}));  // 5 goes to St1
    REQUIRE(!co_await filter->discard_frozen(s1, 0, kCs));  // St1's cluster 0 freed
    CHECK(st1->state(0) == cow::ClusterState::zero);
    CHECK(st2->state(3) == cow::ClusterState::zero);
    CHECK(st1->state(5) == cow::ClusterState::data);
    CHECK(st2->state(5) == cow::ClusterState::zero);
    REQUIRE(!co_await filter->flush());

    std::vector<std::byte> got(kSize - kCs);
    REQUIRE(!co_await filter->read_frozen(s1, kCs, got));
    CHECK(got == slice(image1, kCs, kSize - kCs));
    got.assign(5 * kCs, std::byte{0});
    REQUIRE(!co_await filter->read_frozen(s2, 0, got));
    CHECK(got == slice(image2, 0, 5 * kCs));
  });

  qt::write_file(dir.file("disk.raw"), disk->contents());
  qt::write_file(dir.file("st1.qcow2"), f1->bytes());
  qt::write_file(dir.file("st2.qcow2"), f2->bytes());
  for (auto name : {"st1.qcow2", "st2.qcow2"}) {
    auto [rc, out] = qt::shell("qemu-img check -f qcow2 '" + dir.file(name) + "'");
    INFO(out);
    CHECK(rc == 0);
  }
  for (auto [name, image, discarded] :
       {std::tuple{"st1", &image1, 0ull}, std::tuple{"st2", &image2, 5ull}}) {
    auto raw = dir.file(std::string(name) + ".raw");
    auto [rc, out] = qt::shell("qemu-img convert -f qcow2 -O raw '" +
                               dir.file(std::string(name) + ".qcow2") + "' '" + raw + "'");
    INFO(out);
    REQUIRE(rc == 0);
    auto seen = qt::read_file(raw);
    seen.resize(kSize);
    for (uint64_t c = 0; c < kClusters; ++c) {
      CAPTURE(name);
      CAPTURE(c);
      if (c == discarded) {
        CHECK(slice(seen, c * kCs, kCs) == std::vector<std::byte>(kCs));  // zero, not newer data
      } else {
        CHECK(slice(seen, c * kCs, kCs) == slice(*image, c * kCs, kCs));
      }
    }
  }
}

TEST_CASE("qcow2 stores with 4 KiB copy units in 64 KiB clusters: a 4 KiB first write copies 4 KiB, "
          "and qemu-img reads each store chain as its snapshot") {
  log::set_level(log::Level::error);
  constexpr uint32_t kG = 4096;
  auto disk = std::make_shared<SlowDisk>(kSize);
  auto filter = std::make_shared<cow::CbwFilter>(disk, cow::CbwFilterOptions{"disk.raw", "raw"});
  auto f1 = std::make_shared<qt::GrowingFile>();
  auto f2 = std::make_shared<qt::GrowingFile>();
  std::vector<std::byte> image1, image2;
  const uint64_t discarded = 7 * kCs + 3 * kG;  // one granule of S2, discarded
  run([&]() -> Task<void> {
    for (uint64_t c = 0; c < kClusters; ++c) {
      if (c == 3) continue;  // a hole
      auto d = cbwtest::pattern(kCs, 10 + c);
      REQUIRE(!co_await disk->write(c * kCs, cbwtest::cspan(d), {}));
    }
    image1 = disk->contents();
    std::string n1 = "st1.qcow2", n2 = "st2.qcow2";
    auto st1 = co_await make_store(f1, n1, kG);
    CHECK(st1->cluster_size() == kG);
    CHECK(st1->cluster_count() == kSize / kG);
    CHECK(st1->image()->cluster_size() == kCs);
    CHECK(st1->image()->extended_l2());
    co_await filter->close_gate();
    auto s1 = *co_await filter->add_snapshot(st1);
    filter->open_gate();

    auto w = cbwtest::pattern(kG, 99);
    REQUIRE(!co_await filter->write(kCs + 2 * kG, cbwtest::cspan(w), {}));
    CHECK(st1->stored_bytes() == kG);
    CHECK(filter->stats(s1)->preserved_bytes == kG);
    CHECK(st1->state((kCs + 2 * kG) / kG) == cow::ClusterState::data);
    CHECK(st1->state((kCs + 3 * kG) / kG) == cow::ClusterState::absent);
    // 100 bytes across a granule boundary copy two granules; a hole none.
    auto small = cbwtest::pattern(100, 5);
    REQUIRE(!co_await filter->write(5 * kCs + kG - 50, cbwtest::cspan(small), {}));
    REQUIRE(!co_await filter->write(3 * kCs + kG, cbwtest::cspan(w), {}));
    CHECK(st1->stored_bytes() == 3 * kG);
    CHECK(st1->state((3 * kCs + kG) / kG) == cow::ClusterState::zero);

    image2 = disk->contents();
    auto st2 = co_await make_store(f2, n2, kG);
    co_await filter->close_gate();
    auto s2 = *co_await filter->add_snapshot(st2);
    filter->open_gate();
    auto big = cbwtest::pattern(3 * kCs, 7);
    REQUIRE(!co_await filter->write(kCs + kG / 2, cbwtest::cspan(big), {}));
    REQUIRE(!co_await filter->discard_frozen(s2, discarded, kG));
    REQUIRE(!co_await filter->write(6 * kCs, cbwtest::cspan(big), {}));
    CHECK(st2->state(discarded / kG) == cow::ClusterState::zero);
    REQUIRE(!co_await filter->flush());

    std::vector<std::byte> got(kSize);
    REQUIRE(!co_await filter->read_frozen(s1, 0, got));
    CHECK(got == image1);
    REQUIRE(!co_await filter->read_frozen(s2, 0, std::span(got).first(discarded)));
    CHECK(slice(got, 0, discarded) == slice(image2, 0, discarded));
  });

  if (qt::shell("command -v qemu-img").first != 0) {
    MESSAGE("qemu-img not installed: skipped");
    return;
  }
  qt::TempDir dir;
  qt::write_file(dir.file("disk.raw"), disk->contents());
  qt::write_file(dir.file("st1.qcow2"), f1->bytes());
  qt::write_file(dir.file("st2.qcow2"), f2->bytes());
  for (auto [name, image, hole] : {std::tuple{"st1", &image1, false}, std::tuple{"st2", &image2, true}}) {
    CAPTURE(name);
    auto qcow2 = dir.file(std::string(name) + ".qcow2"), raw = dir.file(std::string(name) + ".raw");
    auto [crc, check] = qt::shell("qemu-img check -f qcow2 '" + qcow2 + "'");
    INFO(check);
    CHECK(crc == 0);
    auto [rc, out] = qt::shell("qemu-img convert -f qcow2 -O raw '" + qcow2 + "' '" + raw + "'");
    INFO(out);
    REQUIRE(rc == 0);
    auto seen = qt::read_file(raw);
    seen.resize(kSize);
    auto expect = *image;
    if (hole) std::fill_n(expect.begin() + std::ptrdiff_t(discarded), kG, std::byte{0});
    CHECK(seen == expect);
  }
}
