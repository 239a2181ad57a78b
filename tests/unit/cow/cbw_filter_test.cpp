// CbwFilter: hand-made interleavings and the rules one at a time.
#include "cow/cbw_filter.hpp"
#include "cow/memory_store.hpp"
#include "tests/unit/cow/cbw_test_support.hpp"
#include "util/errors.hpp"
#include "util/log.hpp"

#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include <cstring>
#include <optional>

using namespace fleece;
using namespace fleece::cbwtest;
using std::chrono::microseconds;
using std::chrono::milliseconds;

namespace {

constexpr uint32_t kCs = 8192;
constexpr uint64_t kClusters = 8;
constexpr uint64_t kSize = kCs * kClusters;

struct Rig {
  std::shared_ptr<SlowDisk> disk = std::make_shared<SlowDisk>(kSize);
  std::shared_ptr<cow::CbwFilter> filter =
      std::make_shared<cow::CbwFilter>(disk, cow::CbwFilterOptions{"disk.raw", "raw"});
  std::vector<std::shared_ptr<cow::MemoryStore>> stores;
  std::vector<cow::SnapshotId> ids;
  std::vector<std::pair<cow::SnapshotId, std::error_code>> broken;

  Rig() {
    log::set_level(log::Level::error);
    filter->set_broken_callback([this](cow::SnapshotId id, std::error_code why) {
      broken.emplace_back(id, why);
    });
  }

  // Fills every cluster with data (no holes) and returns D's bytes.
  Task<std::vector<std::byte>> fill(uint64_t seed = 1) {
    auto data = pattern(kSize, seed);
    REQUIRE(!co_await disk->write(0, cspan(data), {}));
    co_return data;
  }

  Task<cow::SnapshotId> start(cow::SnapshotPolicy policy = {}) {
    auto store = std::make_shared<cow::MemoryStore>(kSize, kCs, "st" + std::to_string(stores.size()));
    const std::string file = "disk.raw", format = "raw";
    co_await store->set_backing(file, format);
    co_await filter->close_gate();
    auto id = co_await filter->add_snapshot(store, policy);
    filter->open_gate();
    REQUIRE(id.has_value());
    stores.push_back(store);
    ids.push_back(*id);
    co_return *id;
  }

  Task<std::vector<std::byte>> read(cow::SnapshotId id, uint64_t off, uint64_t len,
                                    std::error_code* err = nullptr) {
    std::vector<std::byte> buf(len);
    auto ec = co_await filter->read_frozen(id, off, buf);
    if (err) *err = ec;
    else CHECK_MESSAGE(!ec, ec.message());
    co_return buf;
  }

  Task<std::error_code> write(uint64_t off, uint64_t len, uint64_t seed) {
    auto data = pattern(len, seed);
    co_return co_await filter->write(off, cspan(data), {});
  }

  uint64_t total_data_writes() const {
    uint64_t n = 0;
    for (auto& s : stores) n += s->data_writes();
    return n;
  }
};

std::vector<std::byte> slice(const std::vector<std::byte>& v, uint64_t off, uint64_t len) {
  return {v.begin() + static_cast<std::ptrdiff_t>(off),
          v.begin() + static_cast<std::ptrdiff_t>(off + len)};
}

// Spawns a coroutine returning an error_code; the result lands in `out`.
void spawn(Task<std::error_code> t, std::optional<std::error_code>& out, asio::any_io_executor ex) {
  asio::co_spawn(ex, std::move(t), [&out](std::exception_ptr e, std::error_code ec) {
    if (e) std::rethrow_exception(e);
    out = ec;
  });
}

}  // namespace

TEST_CASE("cbw: a first write with three snapshots open copies once, into the newest") {
  Rig rig;
  run([&]() -> Task<void> {
    auto old = co_await rig.fill();
    auto s1 = co_await rig.start();
    auto s2 = co_await rig.start();
    auto s3 = co_await rig.start();
    const uint64_t reads_before = rig.disk->reads();
    REQUIRE(!co_await rig.write(2 * kCs + 100, 50, 7));  // inside cluster 2
    CHECK(rig.total_data_writes() == 1);
    CHECK(rig.stores[2]->data_writes() == 1);
    CHECK(rig.stores[2]->state(2) == cow::ClusterState::data);
    CHECK(rig.stores[0]->state(2) == cow::ClusterState::absent);
    CHECK(rig.disk->reads() - reads_before == 1);
    for (auto id : {s1, s2, s3}) CHECK(co_await rig.read(id, 0, kSize) == old);
    // Steady state: no more copies for that cluster.
    REQUIRE(!co_await rig.write(2 * kCs, kCs, 8));
    CHECK(rig.total_data_writes() == 1);
    // A write spanning three clusters copies three clusters, once each.
    REQUIRE(!co_await rig.write(4 * kCs + 1, 2 * kCs, 9));
    CHECK(rig.total_data_writes() == 4);
    CHECK(rig.filter->stats(s3)->copies == 4);
    CHECK(rig.filter->stats(s3)->preserved_bytes == 4 * kCs);
    CHECK(rig.filter->stats(s1)->copies == 0);
    for (auto id : {s1, s2, s3}) CHECK(co_await rig.read(id, 0, kSize) == old);
  });
}

TEST_CASE("cbw: the copy goes to the newest snapshot that still needs the cluster") {
  Rig rig;
  run([&]() -> Task<void> {
    auto old = co_await rig.fill();
    auto s1 = co_await rig.start();
    auto s2 = co_await rig.start();
    auto s3 = co_await rig.start();
    REQUIRE(!co_await rig.filter->discard_frozen(s3, kCs, kCs));  // S3 is done with cluster 1
    REQUIRE(!co_await rig.write(kCs, 10, 5));
    CHECK(rig.stores[1]->state(1) == cow::ClusterState::data);  // St2 got the copy
    CHECK(rig.stores[2]->state(1) == cow::ClusterState::zero);  // St3 must not fall through
    CHECK(rig.total_data_writes() == 1);
    for (auto id : {s1, s2}) CHECK(co_await rig.read(id, 0, kSize) == old);
    std::error_code ec;
    co_await rig.read(s3, kCs, 1, &ec);
    CHECK(ec == Errc::access_revoked);
    // Everyone discarded cluster 3: a write copies nothing, St3 becomes zero there.
    for (auto id : {s1, s2, s3}) REQUIRE(!co_await rig.filter->discard_frozen(id, 3 * kCs, kCs));
    REQUIRE(!co_await rig.write(3 * kCs, 10, 6));
    CHECK(rig.total_data_writes() == 1);
    CHECK(rig.stores[2]->state(3) == cow::ClusterState::zero);
  });
}

TEST_CASE("cbw: holes are recorded as zero clusters without reading the disk") {
  Rig rig;
  run([&]() -> Task<void> {
    auto s1 = co_await rig.start();  // D is all hole
    const uint64_t reads_before = rig.disk->reads();
    REQUIRE(!co_await rig.write(kCs + 5, 3 * kCs, 1));
    CHECK(rig.disk->reads() == reads_before);
    CHECK(rig.stores[0]->zero_marks() == 4);
    CHECK(rig.stores[0]->data_writes() == 0);
    CHECK(rig.stores[0]->stored_bytes() == 0);
    CHECK(rig.filter->stats(s1)->zero_marks == 4);
    auto img = co_await rig.read(s1, 0, kSize);
    CHECK(img == std::vector<std::byte>(kSize));
    std::vector<block::Extent> ext;
    REQUIRE(!co_await rig.filter->block_status_frozen(s1, 0, kSize, ext));
    uint64_t total = 0;
    for (auto& e : ext) {
      CHECK((e.flags & block::kExtentZero) != 0);
      total += e.length;
    }
    CHECK(total == kSize);
  });
}

TEST_CASE("cbw: a frozen read of the disk in flight holds off the first overwrite") {
  Rig rig;
  run([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto old = co_await rig.fill();
    auto s1 = co_await rig.start();
    rig.disk->hold_reads(true);
    std::vector<std::byte> got(kCs);
    std::optional<std::error_code> read_done, write_done;
    spawn(rig.filter->read_frozen(s1, 3 * kCs, got), read_done, ex);
    co_await settle();
    REQUIRE(rig.disk->held_reads() == 1);  // half read, parked
    auto fresh = pattern(kCs, 99);
    spawn(rig.filter->write(3 * kCs, cspan(fresh), {}), write_done, ex);
    co_await settle();
    CHECK_FALSE(write_done.has_value());           // waits for the reader
    CHECK(rig.stores[0]->data_writes() == 0);       // and has not copied yet
    CHECK(rig.disk->contents() == old);             // nor touched D
    rig.disk->hold_reads(false);
    co_await settle(60);
    REQUIRE(read_done.has_value());
    CHECK(!*read_done);
    CHECK(got == slice(old, 3 * kCs, kCs));
    REQUIRE(write_done.has_value());
    CHECK(!*write_done);
    CHECK(rig.stores[0]->cluster_data(3) == slice(old, 3 * kCs, kCs));
    CHECK(slice(rig.disk->contents(), 3 * kCs, kCs) == fresh);
    CHECK(co_await rig.read(s1, 0, kSize) == old);
  });
}

TEST_CASE("cbw: two writes to one cluster at once copy it once") {
  Rig rig;
  run([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto old = co_await rig.fill();
    auto s1 = co_await rig.start();
    rig.stores[0]->set_hold(true);
    auto a = pattern(100, 1), b = pattern(100, 2);
    std::optional<std::error_code> wa, wb;
    spawn(rig.filter->write(5 * kCs, cspan(a), {}), wa, ex);
    spawn(rig.filter->write(5 * kCs + 1000, cspan(b), {}), wb, ex);
    co_await settle();
    CHECK_FALSE(wa.has_value());
    CHECK_FALSE(wb.has_value());
    rig.stores[0]->set_hold(false);
    co_await settle(60);
    REQUIRE(wa.has_value());
    REQUIRE(wb.has_value());
    CHECK(!*wa);
    CHECK(!*wb);
    CHECK(rig.stores[0]->data_writes() == 1);
    auto now = rig.disk->contents();
    CHECK(slice(now, 5 * kCs, 100) == a);
    CHECK(slice(now, 5 * kCs + 1000, 100) == b);
    CHECK(co_await rig.read(s1, 0, kSize) == old);
  });
}

TEST_CASE("cbw: a discard waits for reads in flight, then revokes and frees") {
  Rig rig;
  run([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto old = co_await rig.fill();
    auto s1 = co_await rig.start();
    REQUIRE(!co_await rig.write(kCs, 10, 3));  // cluster 1 now in St1
    CHECK(rig.stores[0]->stored_bytes() == kCs);
    // Reads in flight: cluster 1 from the store, cluster 2 from D.
    rig.disk->hold_reads(true);
    rig.stores[0]->hold_reads(true);
    std::vector<std::byte> from_store(kCs), from_disk(kCs), late(kCs);
    std::optional<std::error_code> r1, r2, r3, discard;
    spawn(rig.filter->read_frozen(s1, kCs, from_store), r1, ex);
    spawn(rig.filter->read_frozen(s1, 2 * kCs, from_disk), r2, ex);
    co_await settle();
    spawn(rig.filter->discard_frozen(s1, kCs - 1, 2 * kCs + 2), discard, ex);  // inward: 1..2
    co_await settle();
    spawn(rig.filter->read_frozen(s1, kCs + 7, late), r3, ex);
    co_await settle();
    CHECK_FALSE(discard.has_value());
    CHECK(rig.stores[0]->stored_bytes() == kCs);  // not freed under a reader
    rig.stores[0]->hold_reads(false);
    rig.disk->hold_reads(false);
    co_await settle(60);
    REQUIRE(r1.has_value());
    REQUIRE(r2.has_value());
    REQUIRE(r3.has_value());
    REQUIRE(discard.has_value());
    CHECK(!*r1);  // started before the discard: old data
    CHECK(!*r2);
    CHECK(from_store == slice(old, kCs, kCs));
    CHECK(from_disk == slice(old, 2 * kCs, kCs));
    CHECK(*r3 == Errc::access_revoked);
    CHECK(!*discard);
    CHECK(rig.stores[0]->stored_bytes() == 0);
    CHECK(rig.stores[0]->state(1) == cow::ClusterState::zero);
    CHECK(rig.filter->stats(s1)->freed_clusters == 1);
    // Partial clusters at the edges were kept.
    CHECK(co_await rig.read(s1, 0, kCs) == slice(old, 0, kCs));
    CHECK(co_await rig.read(s1, 3 * kCs, kCs) == slice(old, 3 * kCs, kCs));
    // Cluster 2 is no longer copied for S1.
    REQUIRE(!co_await rig.write(2 * kCs, 10, 4));
    CHECK(rig.stores[0]->data_writes() == 1);
    CHECK(rig.stores[0]->state(2) == cow::ClusterState::zero);
  });
}

TEST_CASE("cbw: a store cluster is freed only when no snapshot reads it") {
  Rig rig;
  run([&]() -> Task<void> {
    auto old = co_await rig.fill();
    auto s1 = co_await rig.start();
    auto s2 = co_await rig.start();
    REQUIRE(!co_await rig.write(4 * kCs, 10, 3));  // copy lands in St2, S1 reads through it
    CHECK(rig.stores[1]->stored_bytes() == kCs);
    REQUIRE(!co_await rig.filter->discard_frozen(s2, 4 * kCs, kCs));
    CHECK(rig.stores[1]->stored_bytes() == kCs);  // S1 still reads it
    CHECK(co_await rig.read(s1, 4 * kCs, kCs) == slice(old, 4 * kCs, kCs));
    REQUIRE(!co_await rig.filter->discard_frozen(s1, 4 * kCs, kCs));
    CHECK(rig.stores[1]->stored_bytes() == 0);
    CHECK(rig.stores[1]->state(4) == cow::ClusterState::zero);
    CHECK(rig.stores[0]->state(4) == cow::ClusterState::absent);
  });
}

TEST_CASE("cbw: a stopped snapshot's store stays while an older one reads through it") {
  Rig rig;
  run([&]() -> Task<void> {
    auto old = co_await rig.fill();
    auto s1 = co_await rig.start();
    auto s2 = co_await rig.start();
    CHECK(rig.stores[0]->backing() == "st1 (memory)");
    REQUIRE(!co_await rig.write(6 * kCs, 10, 3));  // St2 holds cluster 6
    REQUIRE(!co_await rig.filter->remove_snapshot(s2));
    CHECK(rig.filter->store_count() == 2);  // zombie
    CHECK(rig.filter->snapshots() == std::vector<cow::SnapshotId>{s1});
    std::error_code ec;
    co_await rig.read(s2, 0, 1, &ec);
    CHECK(ec == std::errc::no_such_device);
    CHECK(co_await rig.read(s1, 0, kSize) == old);
    // Writes still see the zombie: cluster 7 goes to St1 (S1 needs it), no second copy of 6.
    REQUIRE(!co_await rig.write(6 * kCs, kCs, 4));
    REQUIRE(!co_await rig.write(7 * kCs, 10, 5));
    CHECK(rig.stores[0]->state(7) == cow::ClusterState::data);
    CHECK(rig.stores[1]->state(7) == cow::ClusterState::zero);
    CHECK(co_await rig.read(s1, 0, kSize) == old);
    // S1 done with cluster 6: the zombie goes, St1 re-pointed at the disk, and
    // cluster 6 of St1 is a zero cluster rather than a window onto new data.
    REQUIRE(!co_await rig.filter->discard_frozen(s1, 6 * kCs, kCs));
    CHECK(rig.filter->store_count() == 1);
    CHECK(rig.stores[0]->backing() == "disk.raw (raw)");
    CHECK(rig.stores[0]->state(6) == cow::ClusterState::zero);
    CHECK(co_await rig.read(s1, 0, 6 * kCs) == slice(old, 0, 6 * kCs));
    CHECK(co_await rig.read(s1, 7 * kCs, kCs) == slice(old, 7 * kCs, kCs));
    REQUIRE(!co_await rig.filter->remove_snapshot(s1));
    CHECK(rig.filter->store_count() == 0);
    CHECK(rig.filter->cluster_size() == 0);
  });
}

TEST_CASE("cbw: stopping the middle snapshot re-points the chain around it") {
  Rig rig;
  run([&]() -> Task<void> {
    auto old = co_await rig.fill();
    auto s1 = co_await rig.start();
    auto s2 = co_await rig.start();
    auto s3 = co_await rig.start();
    REQUIRE(!co_await rig.filter->remove_snapshot(s2));  // nothing reads through St2
    CHECK(rig.filter->store_count() == 2);
    CHECK(rig.stores[0]->backing() == "st2 (memory)");
    REQUIRE(!co_await rig.write(0, kSize, 9));
    CHECK(rig.stores[2]->data_writes() == kClusters);
    CHECK(rig.stores[1]->data_writes() == 0);
    CHECK(co_await rig.read(s1, 0, kSize) == old);
    CHECK(co_await rig.read(s3, 0, kSize) == old);
  });
}

TEST_CASE("cbw: a failed copy under break-snapshot breaks only the snapshots that needed it") {
  Rig rig;
  run([&]() -> Task<void> {
    auto old = co_await rig.fill();
    auto s1 = co_await rig.start();
    REQUIRE(!co_await rig.write(0, 10, 1));  // cluster 0 preserved in St1
    auto mid = rig.disk->contents();
    auto s2 = co_await rig.start();
    rig.stores[1]->fail_next_writes(1);
    REQUIRE(!co_await rig.write(0, 10, 2));  // the guest write succeeds anyway
    CHECK(slice(rig.disk->contents(), 0, 10) == pattern(10, 2));
    CHECK(rig.filter->stats(s2)->broken);
    CHECK(rig.filter->stats(s2)->broken_reason == std::errc::io_error);
    CHECK_FALSE(rig.filter->stats(s1)->broken);  // reads cluster 0 from St1
    REQUIRE(rig.broken.size() == 1);
    CHECK(rig.broken[0].first == s2);
    std::error_code ec;
    co_await rig.read(s2, kCs, 10, &ec);
    CHECK(ec == Errc::snapshot_broken);
    CHECK(co_await rig.read(s1, 0, kSize) == old);
    // Now S1 needs the copy of cluster 1 and S2 no longer does: St1 gets it.
    REQUIRE(!co_await rig.write(kCs, 10, 3));
    CHECK(rig.stores[0]->state(1) == cow::ClusterState::data);
    CHECK(co_await rig.read(s1, 0, kSize) == old);
    (void)mid;
  });
}

TEST_CASE("cbw: a failed copy under break-guest-write fails the write and keeps the snapshot") {
  Rig rig;
  run([&]() -> Task<void> {
    auto old = co_await rig.fill();
    auto s1 = co_await rig.start({.on_error = cow::OnCbwError::break_guest_write});
    rig.stores[0]->fail_next_writes(1);
    auto ec = co_await rig.write(3 * kCs, 10, 2);
    CHECK(ec == std::errc::io_error);
    CHECK(rig.disk->contents() == old);  // D untouched
    CHECK_FALSE(rig.filter->stats(s1)->broken);
    CHECK(rig.broken.empty());
    CHECK(rig.stores[0]->state(3) == cow::ClusterState::absent);
    // A later writer retries the copy.
    REQUIRE(!co_await rig.write(3 * kCs, 10, 2));
    CHECK(rig.stores[0]->cluster_data(3) == slice(old, 3 * kCs, kCs));
    CHECK(co_await rig.read(s1, 0, kSize) == old);
  });
}

TEST_CASE("cbw: cbw-timeout under break-snapshot lets the write through and breaks the snapshot") {
  Rig rig;
  run([&]() -> Task<void> {
    co_await rig.fill();
    auto s1 = co_await rig.start({.cbw_timeout = milliseconds(20)});
    rig.stores[0]->set_hold(true);
    auto t0 = std::chrono::steady_clock::now();
    REQUIRE(!co_await rig.write(2 * kCs, 10, 2));
    CHECK(std::chrono::steady_clock::now() - t0 >= milliseconds(20));
    CHECK(rig.filter->stats(s1)->broken);
    CHECK(rig.filter->stats(s1)->broken_reason == Errc::cbw_timeout);
    CHECK(slice(rig.disk->contents(), 2 * kCs, 10) == pattern(10, 2));
    // The copy runs on outside the gate: a snapshot start does not wait for it.
    CHECK(rig.filter->gate().in_flight() == 0);
    auto s2 = co_await rig.start();
    auto now = rig.disk->contents();
    rig.stores[0]->set_hold(false);
    co_await settle(60);
    CHECK(co_await rig.read(s2, 0, kSize) == now);
    std::error_code ec;
    co_await rig.read(s1, 0, 1, &ec);
    CHECK(ec == Errc::snapshot_broken);
  });
}

TEST_CASE("cbw: cbw-timeout under break-guest-write fails the write; the copy completes later") {
  Rig rig;
  run([&]() -> Task<void> {
    auto old = co_await rig.fill();
    auto s1 = co_await rig.start(
        {.on_error = cow::OnCbwError::break_guest_write, .cbw_timeout = milliseconds(20)});
    rig.stores[0]->set_hold(true);
    auto ec = co_await rig.write(2 * kCs, 10, 2);
    CHECK(ec == std::errc::io_error);
    CHECK(rig.disk->contents() == old);
    CHECK_FALSE(rig.filter->stats(s1)->broken);
    rig.stores[0]->set_hold(false);
    co_await settle(60);
    CHECK(rig.stores[0]->state(2) == cow::ClusterState::data);
    REQUIRE(!co_await rig.write(2 * kCs, 10, 2));  // steady state now
    CHECK(rig.stores[0]->data_writes() == 1);
    CHECK(co_await rig.read(s1, 0, kSize) == old);
  });
}

TEST_CASE("cbw: max-store-bytes triggers the policy") {
  SUBCASE("break-snapshot") {
    Rig rig;
    run([&]() -> Task<void> {
      co_await rig.fill();
      auto s1 = co_await rig.start({.max_store_bytes = kCs});
      REQUIRE(!co_await rig.write(0, 10, 1));
      CHECK_FALSE(rig.filter->stats(s1)->broken);
      REQUIRE(!co_await rig.write(kCs, 10, 1));
      CHECK(rig.filter->stats(s1)->broken);
      CHECK(rig.filter->stats(s1)->broken_reason == Errc::store_full);
      CHECK(rig.stores[0]->stored_bytes() == kCs);
    });
  }
  SUBCASE("break-guest-write") {
    Rig rig;
    run([&]() -> Task<void> {
      auto old = co_await rig.fill();
      auto s1 = co_await rig.start(
          {.on_error = cow::OnCbwError::break_guest_write, .max_store_bytes = kCs});
      REQUIRE(!co_await rig.write(0, 10, 1));
      CHECK(co_await rig.write(kCs, 10, 1) == std::errc::io_error);
      CHECK_FALSE(rig.filter->stats(s1)->broken);
      // Discarding what was copied makes room again.
      REQUIRE(!co_await rig.filter->discard_frozen(s1, 0, kCs));
      REQUIRE(!co_await rig.write(kCs, 10, 1));
      CHECK(co_await rig.read(s1, kCs, kSize - kCs) == slice(old, kCs, kSize - kCs));
    });
  }
}

TEST_CASE("cbw: a second store with another cluster size, or another size, is refused") {
  Rig rig;
  run([&]() -> Task<void> {
    co_await rig.start();
    co_await rig.filter->close_gate();
    auto odd = co_await rig.filter->add_snapshot(std::make_shared<cow::MemoryStore>(kSize, kCs * 2));
    CHECK(odd.error() == std::errc::invalid_argument);
    auto small = co_await rig.filter->add_snapshot(std::make_shared<cow::MemoryStore>(kSize - 1, kCs));
    CHECK(small.error() == std::errc::invalid_argument);
    rig.filter->open_gate();
    CHECK(rig.filter->store_count() == 1);
  });
}

TEST_CASE("cbw: the gate gives a point in time across two disks") {
  // A writer stamps a counter into disk A, then the same into disk B. In any
  // snapshot taken over both, B's stamp is never newer than A's.
  auto disk_a = std::make_shared<SlowDisk>(kSize);
  auto disk_b = std::make_shared<SlowDisk>(kSize);
  disk_a->set_delay(microseconds(0), microseconds(100), 1);
  disk_b->set_delay(microseconds(0), microseconds(100), 2);
  auto fa = std::make_shared<cow::CbwFilter>(disk_a);
  auto fb = std::make_shared<cow::CbwFilter>(disk_b);
  int checked = 0;
  run([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    bool stop = false;
    auto stamp = [](uint64_t v) {
      std::vector<std::byte> b(8);
      std::memcpy(b.data(), &v, 8);
      return b;
    };
    int writing = 3;  // the writers refer to this frame: it waits for them below
    for (int w = 0; w < 3; ++w) {
      asio::co_spawn(ex, [&, w]() -> Task<void> {
        for (uint64_t v = 1; !stop; ++v) {
          auto b = stamp(v);
          REQUIRE(!co_await fa->write(w * kCs, cspan(b), {}));
          REQUIRE(!co_await fb->write(w * kCs, cspan(b), {}));
        }
        --writing;
      }, asio::detached);
    }
    for (int round = 0; round < 30; ++round) {
      co_await sleep_for(microseconds(300));
      auto sa = std::make_shared<cow::MemoryStore>(kSize, kCs);
      auto sb = std::make_shared<cow::MemoryStore>(kSize, kCs);
      co_await fa->close_gate();
      co_await fb->close_gate();
      auto ia = co_await fa->add_snapshot(sa);
      auto ib = co_await fb->add_snapshot(sb);
      fa->open_gate();
      fb->open_gate();
      REQUIRE(ia.has_value());
      REQUIRE(ib.has_value());
      co_await sleep_for(microseconds(300));
      for (int w = 0; w < 3; ++w) {
        uint64_t a = 0, b = 0;
        std::vector<std::byte> buf(8);
        REQUIRE(!co_await fa->read_frozen(*ia, w * kCs, buf));
        std::memcpy(&a, buf.data(), 8);
        REQUIRE(!co_await fb->read_frozen(*ib, w * kCs, buf));
        std::memcpy(&b, buf.data(), 8);
        CHECK(b <= a);
        CHECK(a <= b + 1);
        ++checked;
      }
      REQUIRE(!co_await fa->remove_snapshot(*ia));
      REQUIRE(!co_await fb->remove_snapshot(*ib));
    }
    stop = true;
    for (int i = 0; writing > 0 && i < 50000; ++i) co_await sleep_for(microseconds(100));
    CHECK(writing == 0);
  });
  CHECK(checked == 90);
}

TEST_CASE("cbw: a snapshot start does not wait for copies; a write still copying falls after it") {
  Rig rig;
  std::optional<std::error_code> wa;  // the held write's result
  run([&]() -> Task<void> {
    auto old = co_await rig.fill();
    auto s1 = co_await rig.start();
    rig.stores[0]->set_hold(true);
    spawn(rig.write(2 * kCs + 7, 10, 9), wa, co_await asio::this_coro::executor);
    co_await settle();
    CHECK_FALSE(wa.has_value());  // parked in its copy into St1
    CHECK(rig.filter->gate().in_flight() == 0);
    // The start completes at once, with the write still copying.
    auto s2 = co_await rig.start();
    CHECK_FALSE(wa.has_value());
    rig.stores[0]->set_hold(false);
    co_await settle(60);
    REQUIRE(wa.has_value());
    CHECK(!*wa);
    CHECK(slice(rig.disk->contents(), 2 * kCs + 7, 10) == pattern(10, 9));
    // The write is in neither snapshot: it came after both points in time.
    CHECK(co_await rig.read(s1, 0, kSize) == old);
    CHECK(co_await rig.read(s2, 0, kSize) == old);
    CHECK(rig.stores[1]->state(2) == cow::ClusterState::data);  // S2 got its own copy
  });
}
