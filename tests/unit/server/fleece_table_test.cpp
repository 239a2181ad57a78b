// FleeceTable: store names, start/stop bookkeeping (exports, store files),
// the start-up sweep of stale stores and deletion at destruction.
#include "server/disk_table.hpp"
#include "server/export_registry.hpp"
#include "server/fleece_table.hpp"
#include "nbd/constants.hpp"
#include "util/log.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

using namespace fleece::server;
namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace {

struct Harness {
  std::string dir = [] {
    char tmpl[] = "/tmp/fleece-table.XXXXXX";
    return std::string(::mkdtemp(tmpl));
  }();
  std::string stores = dir + "/stores";
  DiskTable disks;
  ExportRegistry registry;
  std::vector<std::string> events;
  std::unique_ptr<FleeceTable> table;

  Harness() {
    fleece::log::set_level(fleece::log::Level::error);
    fs::create_directory(stores);
    add_disk("d");
    add_disk("e");
    table = std::make_unique<FleeceTable>(
        disks, registry,
        FleeceTable::Options{stores, [this](std::string_view name, std::string) { events.emplace_back(name); }});
  }
  ~Harness() {
    table.reset();
    fs::remove_all(dir);
  }

  void add_disk(const std::string& name) {
    DiskSpec spec{name, dir + "/" + name + ".img"};
    std::ofstream(spec.path) << std::string(1 << 20, 'x');
    std::string message;
    auto disk = open_disk(spec, &message);
    REQUIRE_MESSAGE(disk.has_value(), message);
    REQUIRE(!disks.add(std::move(*disk)));
  }

  template <class T>
  T run(asio::awaitable<T> task) {
    asio::io_context io;
    std::optional<T> out;
    asio::co_spawn(io, std::move(task), [&](std::exception_ptr e, T value) {
      if (e) std::rethrow_exception(e);
      out = std::move(value);
    });
    io.run();
    return std::move(*out);
  }

  FleeceStarted start(std::string id, std::vector<std::string> devices) {
    FleeceStartRequest request;
    request.id = std::move(id);
    request.devices = std::move(devices);
    return run(start_task(request));
  }
  // By reference: the caller's locals outlive io.run().
  asio::awaitable<FleeceStarted> start_task(const FleeceStartRequest& request) {
    co_return co_await table->start(request);
  }
  std::optional<FleeceError> stop(const std::string& id) { return run(stop_task(id)); }
  asio::awaitable<std::optional<FleeceError>> stop_task(const std::string& id) {
    co_return co_await table->stop(id);
  }

  std::string store_of(const std::string& node, const std::string& id) const {
    return stores + "/" + FleeceTable::store_file_name(node, id);
  }
};

}  // namespace

TEST_CASE("fleece table: store file names are recognisable, and nothing else is") {
  const std::string name = FleeceTable::store_file_name("vm0", "b.1");
  CHECK(name == "vm0.fleece-" + std::to_string(::getpid()) + "-b.1.qcow2");
  CHECK(FleeceTable::is_store_file_name(name));
  CHECK(FleeceTable::is_store_file_name("disk.img.fleece-12-x.qcow2"));
  CHECK_FALSE(FleeceTable::is_store_file_name("disk.img.fleece-bitmaps"));  // a bitmap sidecar
  CHECK_FALSE(FleeceTable::is_store_file_name("disk.fleece-12-.qcow2"));
  CHECK_FALSE(FleeceTable::is_store_file_name("disk.fleece-x-1.qcow2"));
  CHECK_FALSE(FleeceTable::is_store_file_name(".fleece-12-x.qcow2"));
  CHECK_FALSE(FleeceTable::is_store_file_name("disk.fleece-12-x.raw"));
  CHECK_FALSE(FleeceTable::is_store_file_name("disk.qcow2"));
}

TEST_CASE("fleece table: start exports NAME@ID with TRIM, stop removes export and store") {
  Harness h;
  auto started = h.start("t1", {"d", "e"});
  REQUIRE_FALSE(started.error);
  CHECK(started.exports == std::vector<std::string>{"d@t1", "e@t1"});
  CHECK(fs::exists(h.store_of("d", "t1")));
  CHECK(fs::exists(h.store_of("e", "t1")));

  auto view = h.registry.get("d@t1");
  REQUIRE(view);
  CHECK(view->name() == "d@t1");
  CHECK(view->disk_name() == "d");
  const auto info = view->info();
  CHECK((info.transmission_flags & fleece::nbd::kFlagReadOnly) == 0);
  CHECK((info.transmission_flags & fleece::nbd::kFlagSendTrim) != 0);
  CHECK((info.transmission_flags & fleece::nbd::kFlagSendWriteZeroes) == 0);
  CHECK((info.transmission_flags & fleece::nbd::kFlagCanMultiConn) != 0);

  auto list = h.table->list();
  REQUIRE(list.size() == 1);
  CHECK(list[0].id == "t1");
  REQUIRE(list[0].members.size() == 2);
  CHECK(list[0].members[0].store == h.store_of("d", "t1"));
  CHECK(list[0].members[0].cluster_size == 65536);
  CHECK(list[0].members[0].granularity == 4096);  // subclusters by default
  CHECK_FALSE(list[0].members[0].stats.broken);

  // Refusals leave nothing behind.
  auto again = h.start("t1", {"d"});
  REQUIRE(again.error);
  CHECK(again.error->message.find("already exists") != std::string::npos);
  auto unknown = h.start("t2", {"nope"});
  REQUIRE(unknown.error);
  CHECK(unknown.error->kind == FleeceError::Kind::device_not_found);
  auto bad_id = h.start("2x", {"d"});
  REQUIRE(bad_id.error);
  CHECK_FALSE(fs::exists(h.store_of("d", "t2")));
  CHECK(h.table->list().size() == 1);

  CHECK_FALSE(h.stop("t1"));
  CHECK_FALSE(h.registry.get("d@t1"));
  CHECK_FALSE(fs::exists(h.store_of("d", "t1")));
  CHECK_FALSE(fs::exists(h.store_of("e", "t1")));
  CHECK(h.table->list().empty());
  auto missing = h.stop("t1");
  REQUIRE(missing);
  CHECK(missing->message.find("not found") != std::string::npos);
}

TEST_CASE("fleece table: stale stores go at start-up, locked ones and other files stay") {
  Harness h;
  const std::string stale = h.stores + "/d.fleece-999999-old.qcow2";
  const std::string locked = h.stores + "/d.fleece-999998-live.qcow2";
  const std::string other = h.stores + "/d.img.fleece-bitmaps";
  for (const auto& p : {stale, locked, other}) std::ofstream(p) << "x";
  int fd = ::open(locked.c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::flock(fd, LOCK_EX | LOCK_NB) == 0);

  auto removed = h.table->remove_stale_stores(h.disks.list());
  CHECK(removed == std::vector<std::string>{stale});
  CHECK_FALSE(fs::exists(stale));
  CHECK(fs::exists(locked));
  CHECK(fs::exists(other));
  ::close(fd);

  // A live fleece's own stores are locked too: a sweep leaves them alone.
  REQUIRE_FALSE(h.start("t1", {"d"}).error);
  h.table->remove_stale_stores(h.disks.list());
  CHECK(fs::exists(h.store_of("d", "t1")));
}

TEST_CASE("fleece table: destroying the table deletes the stores of live fleeces") {
  Harness h;
  REQUIRE_FALSE(h.start("t1", {"d"}).error);
  REQUIRE_FALSE(h.start("t2", {"d"}).error);  // a second point in time on the same disk
  CHECK(fs::exists(h.store_of("d", "t1")));
  CHECK(fs::exists(h.store_of("d", "t2")));
  h.table.reset();
  CHECK_FALSE(fs::exists(h.store_of("d", "t1")));
  CHECK_FALSE(fs::exists(h.store_of("d", "t2")));
}
