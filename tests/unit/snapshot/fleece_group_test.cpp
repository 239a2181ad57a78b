// FleeceGroup: one point in time across disks, all or nothing.
#include "snapshot/fleece_group.hpp"

#include "cow/memory_store.hpp"
#include "tests/unit/cow/cbw_test_support.hpp"
#include "util/log.hpp"

#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include <cstring>

using namespace fleece;
using namespace fleece::cbwtest;
using std::chrono::microseconds;

namespace {
constexpr uint32_t kCs = 4096;
constexpr uint64_t kSize = kCs * 4;

struct Disk {
  std::shared_ptr<SlowDisk> disk = std::make_shared<SlowDisk>(kSize);
  std::shared_ptr<cow::CbwFilter> filter = std::make_shared<cow::CbwFilter>(disk);
};
}  // namespace

TEST_CASE("fleece group: writes are wholly before or after the point in time on every disk") {
  log::set_level(log::Level::error);
  Disk a, b, c;
  a.disk->set_delay(microseconds(0), microseconds(80), 1);
  b.disk->set_delay(microseconds(0), microseconds(80), 2);
  c.disk->set_delay(microseconds(0), microseconds(80), 3);
  int checked = 0;
  run([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    bool stop = false;
    int writers_done = 0;
    // Each writer stamps v into A, then B, then C (the order a journaling
    // guest relies on across its disks).
    for (int w = 0; w < 4; ++w) {
      asio::co_spawn(ex, [&, w]() -> Task<void> {
        for (uint64_t v = 1; !stop; ++v) {
          std::vector<std::byte> s(8);
          std::memcpy(s.data(), &v, 8);
          for (Disk* d : {&a, &b, &c}) REQUIRE(!co_await d->filter->write(w * kCs + 8 * w, s, {}));
        }
        ++writers_done;
      }, asio::detached);
    }
    for (int round = 0; round < 25; ++round) {
      co_await sleep_for(microseconds(200));
      std::vector<snapshot::FleeceGroup::Member> members;
      for (auto [name, d] : {std::pair{"a", &a}, std::pair{"b", &b}, std::pair{"c", &c}})
        members.push_back({name, d->filter, std::make_shared<cow::MemoryStore>(kSize, kCs)});
      std::string name = "f" + std::to_string(round);  // not a temporary in co_await (GCC 12)
      auto group = co_await snapshot::FleeceGroup::start(name, std::move(members), {});
      REQUIRE(group.has_value());
      auto& g = **group;
      CHECK(g.members().size() == 3);
      co_await sleep_for(microseconds(200));  // writes go on under the snapshot
      for (int w = 0; w < 4; ++w) {
        uint64_t v[3];
        for (int i = 0; i < 3; ++i) {
          std::vector<std::byte> buf(8);
          REQUIRE(!co_await g.members()[i].view->read(w * kCs + 8 * w, buf));
          std::memcpy(&v[i], buf.data(), 8);
        }
        CHECK(v[0] >= v[1]);
        CHECK(v[1] >= v[2]);
        CHECK(v[0] <= v[2] + 1);  // at most the one write that was in flight
        ++checked;
      }
      REQUIRE(!co_await g.stop());
      for (Disk* d : {&a, &b, &c}) CHECK(d->filter->store_count() == 0);
      std::vector<std::byte> one(1);
      CHECK(co_await g.members()[0].view->read(0, one) == std::errc::no_such_device);
    }
    stop = true;
    while (writers_done < 4) co_await sleep_for(microseconds(100));
  });
  CHECK(checked == 100);
}

TEST_CASE("fleece group: a failed install leaves nothing behind and releases the guests") {
  log::set_level(log::Level::error);
  Disk a, b;
  run([&]() -> Task<void> {
    std::vector<snapshot::FleeceGroup::Member> members{
        {"a", a.filter, std::make_shared<cow::MemoryStore>(kSize, kCs)},
        {"b", b.filter, std::make_shared<cow::MemoryStore>(kSize + 1, kCs)}};  // wrong size
    std::string bad = "bad", dup_name = "dup";
    auto group = co_await snapshot::FleeceGroup::start(bad, std::move(members), {});
    CHECK(group.error() == std::errc::invalid_argument);
    CHECK(a.filter->store_count() == 0);
    CHECK(b.filter->store_count() == 0);
    CHECK_FALSE(a.filter->gate().closed());
    CHECK_FALSE(b.filter->gate().closed());
    std::vector<std::byte> d(10, std::byte{1});
    CHECK(!co_await a.filter->write(0, d, {}));
    // The same disk twice is refused before anything is touched.
    std::vector<snapshot::FleeceGroup::Member> twice{
        {"a", a.filter, std::make_shared<cow::MemoryStore>(kSize, kCs)},
        {"a2", a.filter, std::make_shared<cow::MemoryStore>(kSize, kCs)}};
    auto dup = co_await snapshot::FleeceGroup::start(dup_name, std::move(twice), {});
    CHECK(dup.error() == std::errc::invalid_argument);
    CHECK_FALSE(a.filter->gate().closed());
  });
}
