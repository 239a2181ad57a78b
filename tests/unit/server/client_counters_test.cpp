// Per-client counters in the export registry: what query-fleeces and
// Engine::clients() report for each connection.
#include "server/export_registry.hpp"

#include "block/memory_device.hpp"

#include <doctest/doctest.h>

using namespace fleece::server;

TEST_CASE("registry: each client reports its own read bytes") {
  ExportRegistry r;
  REQUIRE_FALSE(r.add("d", fleece::block::make_memory_device(1 << 20), false));
  ClientInfo gone;
  r.set_client_hooks(nullptr, [&](const ClientInfo& c) { gone = c; });
  auto a = std::make_shared<ClientCounters>();
  auto b = std::make_shared<ClientCounters>();
  const uint64_t ia = r.attach_client("d", "unix", nullptr, a);
  const uint64_t ib = r.attach_client("d", "127.0.0.1:4000", nullptr, b);
  const uint64_t ic = r.attach_client("d", "unix", nullptr);  // no counters: reports 0
  a->read_bytes.fetch_add(4096);
  a->read_bytes.fetch_add(65536);
  b->read_bytes.fetch_add(512);

  auto by_id = [&](uint64_t id) {
    for (const auto& c : r.clients("d")) {
      if (c.id == id) return c;
    }
    FAIL("client not listed");
    return ClientInfo{};
  };
  CHECK(by_id(ia).read_bytes == 69632);
  CHECK(by_id(ib).read_bytes == 512);
  CHECK(by_id(ic).read_bytes == 0);
  CHECK(r.clients().size() == 3);

  // The disconnect hook sees the final figure.
  b->read_bytes.fetch_add(1024);
  r.detach_client(ib);
  CHECK(gone.id == ib);
  CHECK(gone.read_bytes == 1536);
  r.detach_client(ia);
  r.detach_client(ic);
  CHECK(r.clients().empty());
}
