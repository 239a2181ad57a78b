#include "server/disk_table.hpp"
#include "server/export_registry.hpp"
#include "server/qmp_commands.hpp"
#include "server/qmp_dispatcher.hpp"
#include "server/qmp_events.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <filesystem>
#include <fstream>

using namespace fleece::server;
namespace asio = boost::asio;
namespace json = boost::json;

namespace {

struct Harness {
  std::string dir = [] {
    char tmpl[] = "/tmp/qmp-cmd.XXXXXX";
    return std::string(::mkdtemp(tmpl));
  }();
  DiskTable disks;
  ExportRegistry registry;
  int shutdowns = 0;
  std::shared_ptr<QmpCommandTable> table =
      make_qmp_command_table({&disks, &registry, [this] { ++shutdowns; }});
  QmpDispatcher dispatcher{*table};

  Harness() { run(R"({"execute": "qmp_capabilities"})"); }
  ~Harness() { std::filesystem::remove_all(dir); }

  std::string file(const std::string& name, std::size_t size) {
    std::string path = dir + "/" + name;
    std::ofstream(path) << std::string(size, 'x');
    return path;
  }

  // The reply; runs after_reply as the monitor would.
  json::object run(std::string_view request) {
    asio::io_context io;
    json::object out;
    json::value value = json::parse(request);
    asio::co_spawn(io, [&]() -> asio::awaitable<void> {
      QmpReply reply = co_await dispatcher.dispatch(value);
      out = reply.message;
      if (reply.after_reply) reply.after_reply();
    }, [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
    io.run();
    return out;
  }
  json::value ok(std::string_view request) {
    auto reply = run(request);
    INFO(json::serialize(reply));
    REQUIRE(reply.contains("return"));
    return reply.at("return");
  }
  std::string error(std::string_view request) {
    auto reply = run(request);
    INFO(json::serialize(reply));
    REQUIRE(reply.contains("error"));
    return std::string(reply.at("error").at("class").as_string()) + ": " +
           std::string(reply.at("error").at("desc").as_string());
  }
};

}  // namespace

TEST_CASE("commands: blockdev-add / query-block / blockdev-del") {
  Harness h;
  const std::string path = h.file("d0.img", 1 << 20);
  const std::string add = fmt::format(
      R"({{"execute": "blockdev-add", "arguments": {{"node-name": "d0", "driver": "file", "filename": "{}", "cache": {{"direct": false}}}}}})",
      path);
  CHECK(h.ok(add) == json::object());
  CHECK(h.error(add) == "GenericError: Duplicate nodes with node-name='d0'");
  CHECK(h.error(R"({"execute": "blockdev-add", "arguments": {"node-name": "d1", "driver": "file", "filename": "/nonexistent/x.img"}})")
            .find("/nonexistent/x.img") != std::string::npos);
  CHECK(h.error(R"({"execute": "blockdev-add", "arguments": {"node-name": "d1", "driver": "vmdk", "filename": "x"}})") ==
        "GenericError: Parameter 'driver' does not accept value 'vmdk'");
  CHECK(h.error(R"({"execute": "blockdev-add", "arguments": {"node-name": "d1", "driver": "file"}})") ==
        "GenericError: Parameter 'filename' is missing");

  auto block = h.ok(R"({"execute": "query-block"})").as_array();
  REQUIRE(block.size() == 1);
  CHECK(block[0].at("device") == "d0");
  CHECK(block[0].at("inserted").at("file").as_string() == path);
  CHECK(block[0].at("inserted").at("ro") == false);
  CHECK(block[0].at("inserted").at("image").at("virtual-size") == 1 << 20);

  // Exported: blockdev-del refuses, naming the export.
  CHECK(h.ok(R"({"execute": "nbd-server-add", "arguments": {"device": "d0", "name": "e0"}})") == json::object());
  CHECK(h.error(R"({"execute": "blockdev-del", "arguments": {"node-name": "d0"}})") ==
        "GenericError: Node 'd0' is busy: exported over NBD as 'e0'; remove the export first (nbd-server-remove)");
  CHECK(h.ok(R"({"execute": "nbd-server-remove", "arguments": {"name": "e0"}})") == json::object());
  CHECK(h.ok(R"({"execute": "blockdev-del", "arguments": {"node-name": "d0"}})") == json::object());
  CHECK(h.error(R"({"execute": "blockdev-del", "arguments": {"node-name": "d0"}})") ==
        "GenericError: Failed to find node with node-name='d0'");
  CHECK(h.ok(R"({"execute": "query-block"})").as_array().empty());
}

TEST_CASE("commands: nbd-server-add / remove / query-nbd-exports / query-stats") {
  Harness h;
  const std::string path = h.file("d0.img", 65536);
  h.ok(fmt::format(R"({{"execute": "blockdev-add", "arguments": {{"node-name": "d0", "driver": "raw", "filename": "{}"}}}})", path));
  h.ok(fmt::format(R"({{"execute": "blockdev-add", "arguments": {{"node-name": "ro", "driver": "file", "filename": "{}", "read-only": true}}}})", path));

  CHECK(h.error(R"({"execute": "nbd-server-add", "arguments": {"device": "nope"}})") ==
        "DeviceNotFound: Device 'nope' not found");
  CHECK(h.error(R"({"execute": "nbd-server-add", "arguments": {"device": "ro", "writable": true}})") ==
        "GenericError: Node 'ro' is read-only; export it without writable=true");
  CHECK(h.ok(R"({"execute": "nbd-server-add", "arguments": {"device": "d0", "writable": true, "description": "disk zero"}})") == json::object());
  CHECK(h.error(R"({"execute": "nbd-server-add", "arguments": {"device": "ro", "name": "d0"}})") ==
        "GenericError: NBD server already has export named 'd0'");
  CHECK(h.ok(R"({"execute": "nbd-server-add", "arguments": {"device": "ro", "name": "second"}})") == json::object());

  auto exports = h.ok(R"({"execute": "query-nbd-exports"})").as_array();
  REQUIRE(exports.size() == 2);
  CHECK(exports[0].at("name") == "d0");
  CHECK(exports[0].at("device") == "d0");
  CHECK(exports[0].at("writable") == true);
  CHECK(exports[0].at("description") == "disk zero");
  CHECK(exports[0].at("size") == 65536);
  CHECK(exports[1].at("name") == "second");

  // A connected client: shown, blocks a safe removal, is closed by a hard one.
  int closed = 0;
  uint64_t id = h.registry.attach_client("d0", "127.0.0.1:5555", [&] { ++closed; });
  exports = h.ok(R"({"execute": "query-nbd-exports"})").as_array();
  REQUIRE(exports[0].at("clients").as_array().size() == 1);
  CHECK(exports[0].at("clients").at(0).at("address") == "127.0.0.1:5555");
  CHECK(exports[0].at("clients").at(0).at("id") == id);

  auto stats = h.ok(R"({"execute": "query-stats"})").at("exports").as_array();
  REQUIRE(stats.size() == 2);
  CHECK(stats[0].at("name") == "d0");
  CHECK(stats[0].at("read-bytes") == 0);
  CHECK(stats[0].at("clients") == 1);

  CHECK(h.error(R"({"execute": "nbd-server-remove", "arguments": {"name": "d0"}})") ==
        "GenericError: export 'd0' still in use by 1 client(s); use mode=hard to disconnect them");
  CHECK(h.error(R"({"execute": "nbd-server-remove", "arguments": {"name": "d0", "mode": "soft"}})") ==
        "GenericError: Parameter 'mode' does not accept value 'soft'");
  CHECK(h.ok(R"({"execute": "nbd-server-remove", "arguments": {"name": "d0", "mode": "hard"}})") == json::object());
  CHECK(closed == 1);
  h.registry.detach_client(id);
  CHECK(h.error(R"({"execute": "nbd-server-remove", "arguments": {"name": "d0"}})") ==
        "GenericError: Export 'd0' is not found");
}

TEST_CASE("commands: quit, query-version, query-commands, event data") {
  Harness h;
  CHECK(h.ok(R"({"execute": "quit"})") == json::object());
  CHECK(h.shutdowns == 1);
  CHECK(h.ok(R"({"execute": "query-version"})").at("package").as_string().starts_with("fleece "));
  auto commands = h.ok(R"({"execute": "query-commands"})").as_array();
  std::vector<std::string> names;
  for (auto& c : commands) names.emplace_back(c.at("name").as_string());
  for (const char* expected : {"qmp_capabilities", "blockdev-add", "blockdev-del", "query-block", "nbd-server-add",
                               "nbd-server-remove", "query-nbd-exports", "query-stats", "quit", "query-version",
                               "query-commands"}) {
    CHECK(std::find(names.begin(), names.end(), expected) != names.end());
  }
  ClientInfo client{7, "d0", "unix", {}};
  CHECK(nbd_client_event_data(client) == R"({"export":"d0","client":"unix","id":7})");
}
