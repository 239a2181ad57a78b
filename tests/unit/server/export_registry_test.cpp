#include "server/export_registry.hpp"

#include "block/memory_device.hpp"
#include "nbd/constants.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <thread>

using namespace fleece::server;
using Mode = ExportRegistry::RemoveMode;

TEST_CASE("registry: add, find, list, remove") {
  ExportRegistry r;
  CHECK(r.empty());
  CHECK_FALSE(r.find("a"));
  CHECK_FALSE(r.find(""));
  CHECK_FALSE(r.add("b", fleece::block::make_memory_device(1 << 20), true, "disk b", "node-b"));
  CHECK_FALSE(r.add("a", fleece::block::make_memory_device(2 << 20), false));
  CHECK(r.add("a", fleece::block::make_memory_device(1), true) == std::errc::file_exists);
  CHECK(r.add("c", nullptr, true) == std::errc::invalid_argument);
  CHECK(r.add(std::string(4097, 'x'), fleece::block::make_memory_device(1), true) == std::errc::invalid_argument);

  auto b = r.find("b");
  REQUIRE(b);
  CHECK(b->name == "b");
  CHECK(b->description == "disk b");
  CHECK(b->size == (1u << 20));
  CHECK((b->transmission_flags & fleece::nbd::kFlagReadOnly) == 0);
  CHECK((b->transmission_flags & fleece::nbd::kFlagSendWriteZeroes) != 0);
  CHECK((b->transmission_flags & fleece::nbd::kFlagCanMultiConn) != 0);
  CHECK((b->transmission_flags & fleece::nbd::kFlagSendDf) != 0);
  CHECK(b->max_block == (32u << 20));
  CHECK(b->preferred_block == 4096);
  REQUIRE(b->meta_contexts.size() == 1);
  CHECK(b->meta_contexts[0] == "base:allocation");
  CHECK(r.get("b")->disk_name() == "node-b");

  auto a = r.find("a");
  REQUIRE(a);
  CHECK((a->transmission_flags & fleece::nbd::kFlagReadOnly) != 0);
  CHECK((a->transmission_flags & fleece::nbd::kFlagSendWriteZeroes) == 0);
  CHECK((a->transmission_flags & fleece::nbd::kFlagSendTrim) == 0);
  CHECK_FALSE(r.get("a")->writable());

  // "" is the first export added while no export is called "".
  REQUIRE(r.find(""));
  CHECK(r.find("")->name == "b");

  auto names = r.list();
  REQUIRE(names.size() == 2);
  CHECK(names[0].name == "a");
  CHECK(names[1].name == "b");

  CHECK(r.remove("zz", Mode::safe) == std::errc::no_such_device_or_address);
  CHECK_FALSE(r.remove("b", Mode::safe));
  CHECK_FALSE(r.find("b"));
  CHECK(r.find("")->name == "a");
  CHECK_FALSE(r.remove("a", Mode::hard));
  CHECK(r.empty());
  CHECK_FALSE(r.find(""));
}

TEST_CASE("registry: clients, hooks, safe and hard removal") {
  ExportRegistry r;
  REQUIRE_FALSE(r.add("d", fleece::block::make_memory_device(4096), true));
  std::vector<std::string> events;
  r.set_client_hooks([&](const ClientInfo& c) { events.push_back("+" + c.export_name + " " + c.peer); },
                     [&](const ClientInfo& c) { events.push_back("-" + c.export_name + " " + c.peer); });
  int closed = 0;
  uint64_t id1 = r.attach_client("d", "127.0.0.1:4000", [&] { ++closed; });
  uint64_t id2 = r.attach_client("d", "unix", [&] { ++closed; });
  CHECK(id1 != id2);
  CHECK(r.clients().size() == 2);
  CHECK(r.clients("d").size() == 2);
  CHECK(r.clients("other").empty());
  CHECK(r.clients("d")[0].peer == "127.0.0.1:4000");

  CHECK(r.remove("d", Mode::safe) == std::errc::device_or_resource_busy);
  CHECK(r.find("d"));
  CHECK(closed == 0);

  r.detach_client(id2);
  r.detach_client(id2);  // twice is harmless
  CHECK(r.clients("d").size() == 1);

  CHECK_FALSE(r.remove("d", Mode::hard));
  CHECK(closed == 1);
  CHECK_FALSE(r.find("d"));
  r.detach_client(id1);
  CHECK(r.clients().empty());
  REQUIRE(events.size() == 4);
  CHECK(events[0] == "+d 127.0.0.1:4000");
  CHECK(events[1] == "+d unix");
  CHECK(events[2] == "-d unix");
  CHECK(events[3] == "-d 127.0.0.1:4000");
}

TEST_CASE("registry: concurrent add, find and remove") {
  ExportRegistry r;
  std::atomic<bool> go{true};
  std::thread reader([&] {
    while (go) {
      for (const auto& e : r.list()) CHECK(!e.name.empty());
      (void)r.find("e1");
    }
  });
  for (int i = 0; i < 2000; ++i) {
    std::string name = "e" + std::to_string(i % 7);
    if (r.add(name, fleece::block::make_memory_device(4096), true)) {
      CHECK_FALSE(r.remove(name, Mode::hard));
    }
  }
  go = false;
  reader.join();
}

TEST_CASE("latency histogram: percentiles within a bucket") {
  LatencyHistogram h;
  CHECK(h.percentile(0.5) == 0);
  for (int i = 0; i < 90; ++i) h.record(100);
  for (int i = 0; i < 10; ++i) h.record(10'000);
  CHECK(h.count() == 100);
  auto p50 = h.percentile(0.5);
  CHECK(p50 >= 100);
  CHECK(p50 <= 128);
  auto p99 = h.percentile(0.99);
  CHECK(p99 >= 10'000);
  CHECK(p99 <= 12'500);
  for (uint64_t v : {0ull, 1ull, 3ull, 4ull, 5ull, 7ull, 8ull, 1000ull, 123456789ull}) {
    int b = LatencyHistogram::bucket_of(v);
    CHECK(LatencyHistogram::bucket_upper(b) >= v);
    if (b > 0) CHECK(LatencyHistogram::bucket_upper(b - 1) < v);
  }
}

TEST_CASE("export stats: counters") {
  ExportStats s;
  s.begin();
  s.begin();
  CHECK(s.snapshot().in_flight == 2);
  s.end(ExportStats::Op::read, 4096, 50, false);
  s.end(ExportStats::Op::write, 512, 70, true);
  auto snap = s.snapshot();
  CHECK(snap.in_flight == 0);
  CHECK(snap.read_requests == 1);
  CHECK(snap.read_bytes == 4096);
  CHECK(snap.write_requests == 1);
  CHECK(snap.write_bytes == 0);
  CHECK(snap.errors == 1);
  CHECK(snap.read_p50_us >= 50);
}
