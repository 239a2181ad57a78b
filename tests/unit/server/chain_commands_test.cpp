// The chain's QMP commands (query-block with backing images,
// blockdev-snapshot-sync, block-commit, block-job-*), the job table and the
// qemu:allocation-depth context, on chains made by qemu-img.
#include "cow/backing_chain.hpp"
#include "server/allocation_depth_context.hpp"
#include "server/disk_table.hpp"
#include "server/export_registry.hpp"
#include "server/job_table.hpp"
#include "server/qmp_commands.hpp"
#include "server/qmp_dispatcher.hpp"
#include "util/log.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>

using namespace fleece;
using namespace fleece::server;
namespace asio = boost::asio;
namespace json = boost::json;

namespace {

constexpr uint64_t kMiB = 1 << 20;

void sh(const std::string& command) {
  INFO(command);
  REQUIRE(std::system(command.c_str()) == 0);
}

// master.img (raw, 4 MiB) <- cow.qcow2 <- newcow.qcow2, as in the issue.
struct Chain {
  std::string dir = [] {
    char tmpl[] = "/tmp/chain-cmd.XXXXXX";
    return std::string(::mkdtemp(tmpl));
  }();
  std::string master = dir + "/master.img", cow = dir + "/cow.qcow2", newcow = dir + "/newcow.qcow2";

  Chain() {
    log::set_level(log::Level::error);
    sh(fmt::format("cd {} && qemu-img create -q -f raw master.img 4M && "
                   "qemu-io -f raw -c 'write -P 0xa0 0 1M' master.img >/dev/null && "
                   "qemu-img create -q -f qcow2 -b master.img -F raw cow.qcow2 && "
                   "qemu-io -c 'write -P 0xb0 1M 1M' cow.qcow2 >/dev/null && "
                   "qemu-img create -q -f qcow2 -b cow.qcow2 -F qcow2 newcow.qcow2 && "
                   "qemu-io -c 'write -P 0xc0 3M 64k' newcow.qcow2 >/dev/null",
                   dir));
  }
  ~Chain() { std::filesystem::remove_all(dir); }
};

struct Harness {
  DiskTable disks;
  ExportRegistry registry;
  std::vector<std::pair<std::string, json::value>> events;
  std::shared_ptr<QmpCommandTable> table = make_qmp_command_table(
      {&disks, &registry, [] {}, [this](std::string_view name, std::string data) {
         events.emplace_back(std::string(name), json::parse(data));
       }});
  QmpDispatcher dispatcher{*table};

  Harness() { run(R"({"execute": "qmp_capabilities"})"); }

  // Runs until every piece of work is done: a job started by the command too.
  json::object run(const std::string& request) {
    asio::io_context io;
    json::object out;
    json::value value = json::parse(request);
    asio::co_spawn(io, [&]() -> asio::awaitable<void> {
      QmpReply reply = co_await dispatcher.dispatch(value);
      out = reply.message;
    }, [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
    io.run();
    return out;
  }
  json::value ok(const std::string& request) {
    auto reply = run(request);
    INFO(json::serialize(reply));
    REQUIRE(reply.contains("return"));
    return reply.at("return");
  }
  std::string error(const std::string& request) {
    auto reply = run(request);
    INFO(json::serialize(reply));
    REQUIRE(reply.contains("error"));
    return std::string(reply.at("error").at("class").as_string()) + ": " +
           std::string(reply.at("error").at("desc").as_string());
  }
  json::object inserted() {
    auto block = ok(R"({"execute": "query-block"})").as_array();
    REQUIRE(block.size() == 1);
    return block[0].at("inserted").as_object();
  }
};

std::string str(const json::value& v) { return std::string(v.as_string()); }

std::string exec(std::string_view command, const std::string& args) {
  return fmt::format(R"({{"execute": "{}", "arguments": {{{}}}}})", command, args);
}

template <class T>
T run_task(asio::awaitable<T> task) {
  asio::io_context io;
  auto f = asio::co_spawn(io, std::move(task), asio::use_future);
  io.run();
  return f.get();
}

}  // namespace

TEST_CASE("chain commands: query-block shows the chain, commit shortens it, a snapshot lengthens it") {
  Chain c;
  Harness h;
  h.ok(exec("blockdev-add", fmt::format(R"("node-name": "vm", "driver": "qcow2", "filename": "{}")", c.newcow)));

  auto ins = h.inserted();
  CHECK(str(ins.at("file")) == c.newcow);
  CHECK(ins.at("drv") == "qcow2");
  CHECK(ins.at("backing_file") == "cow.qcow2");
  CHECK(ins.at("backing_file_depth") == 2);
  const auto& image = ins.at("image");
  CHECK(str(image.at("filename")) == c.newcow);
  CHECK(image.at("virtual-size") == 4 * kMiB);
  CHECK(image.at("cluster-size") == 65536);
  CHECK(image.at("backing-filename") == "cow.qcow2");
  CHECK(str(image.at("full-backing-filename")) == c.cow);
  CHECK(image.at("backing-filename-format") == "qcow2");
  CHECK(str(image.at("backing-image").at("filename")) == c.cow);
  CHECK(image.at("backing-image").at("backing-image").at("format") == "raw");
  CHECK(!image.at("backing-image").at("backing-image").as_object().contains("backing-image"));

  CHECK(h.error(exec("block-commit", R"("device": "vm")")).starts_with(
      "GenericError: Top image as the active layer is currently unsupported"));
  CHECK(h.error(exec("block-commit", R"("device": "nope")")) == "DeviceNotFound: Device 'nope' not found");
  CHECK(h.error(exec("block-commit", R"("device": "vm", "top": "x.qcow2")")) ==
        "GenericError: Top image file x.qcow2 not found");
  CHECK(h.error(exec("block-commit", R"("device": "vm", "top": "cow.qcow2", "base": "newcow.qcow2")")) ==
        "GenericError: Can't find 'newcow.qcow2' in the backing chain");
  CHECK(h.error(exec("block-commit", R"("device": "vm", "top": "cow.qcow2", "base": "cow.qcow2")")) ==
        "GenericError: cannot commit an image into itself");
  CHECK(h.error(exec("block-commit", R"("device": "vm", "top": "cow.qcow2", "speed": -5)")) ==
        "GenericError: Invalid parameter 'speed'");
  CHECK(h.events.empty());

  // The harness runs the io_context dry: the job has finished when run() returns.
  CHECK(h.ok(exec("block-commit", R"("job-id": "c1", "device": "vm", "top": "cow.qcow2")")) == json::object());
  REQUIRE(h.events.size() == 1);
  CHECK(h.events[0].first == "BLOCK_JOB_COMPLETED");
  CHECK(h.events[0].second == json::parse(R"({"type": "commit", "device": "c1", "len": 4194304,
                                               "offset": 4194304, "speed": 0})"));
  CHECK(h.ok(R"({"execute": "query-block-jobs"})") == json::array());
  ins = h.inserted();
  CHECK(ins.at("backing_file_depth") == 1);
  CHECK(ins.at("backing_file") == "master.img");
  CHECK(str(ins.at("image").at("backing-image").at("filename")) == c.master);

  const std::string snap = c.dir + "/snap.qcow2";
  CHECK(h.ok(exec("blockdev-snapshot-sync", fmt::format(R"("device": "vm", "snapshot-file": "{}")", snap))) ==
        json::object());
  ins = h.inserted();
  CHECK(str(ins.at("file")) == snap);
  CHECK(ins.at("backing_file") == "newcow.qcow2");
  CHECK(ins.at("backing_file_depth") == 2);
  const std::string again = h.error(exec("blockdev-snapshot-sync", fmt::format(R"("node-name": "vm", "snapshot-file": "{}")", snap)));
  CHECK(again.find("File exists") != std::string::npos);
  CHECK(h.error(exec("blockdev-snapshot-sync", fmt::format(R"("device": "vm", "snapshot-file": "{}/s2", "mode": "existing")", c.dir)))
            .starts_with("GenericError: mode 'existing' is not supported"));
  CHECK(h.error(exec("blockdev-snapshot-sync", R"("snapshot-file": "/tmp/x")")) ==
        "GenericError: Cannot find device='' nor node-name=''");
  sh(fmt::format("qemu-img check -q {0} && test \"$(qemu-img info --backing-chain {0} | grep -c '^image:')\" = 3", snap));
}

TEST_CASE("chain commands: job control answers like QEMU") {
  Chain c;
  Harness h;
  h.ok(exec("blockdev-add", fmt::format(R"("node-name": "vm", "driver": "qcow2", "filename": "{}")", c.newcow)));
  for (const char* cmd : {"block-job-pause", "block-job-resume", "block-job-cancel"}) {
    CHECK(h.error(exec(cmd, R"("device": "j")")) == "DeviceNotActive: Block job 'j' not found");
  }
  CHECK(h.error(exec("block-job-set-speed", R"("device": "j", "speed": 1)")) ==
        "DeviceNotActive: Block job 'j' not found");
  CHECK(h.error(exec("block-job-set-speed", R"("device": "j")")) == "GenericError: Parameter 'speed' is missing");
  CHECK(h.error(exec("block-commit", R"("device": "vm", "top": "cow.qcow2", "job-id": "-x")")) ==
        "GenericError: Invalid job ID '-x'");
  CHECK(h.error(exec("block-commit", R"("device": "vm", "top": "cow.qcow2", "on-error": "ignore")")) ==
        "GenericError: Parameter 'on-error' does not accept value 'ignore'");
  // Without job-id the job is named after the device, as in QEMU.
  CHECK(h.ok(exec("block-commit", R"("device": "vm", "top": "cow.qcow2")")) == json::object());
  REQUIRE(h.events.size() == 1);
  CHECK(h.events[0].second.at("device") == "vm");
}

namespace {

// A job that paces through `steps` steps of 64 KiB.
class StepJob final : public snapshot::BlockJob {
 public:
  StepJob(asio::any_io_executor ex, std::string id, snapshot::BlockJobEvents events, int steps)
      : BlockJob(std::move(ex), std::move(id), "commit", "d", 0, std::move(events)), steps_(steps) {}

 private:
  block::Task<std::error_code> run() override {
    for (int i = 0; i < steps_; ++i) {
      if (!co_await pace(65536)) co_return std::make_error_code(std::errc::operation_canceled);
      set_progress(uint64_t(i + 1) * 65536, uint64_t(steps_) * 65536);
    }
    co_return std::error_code{};
  }
  int steps_;
};

}  // namespace

TEST_CASE("job table: ids are unique, a job leaves before its event, cancel_all and wait_idle") {
  asio::io_context io;
  JobTable jobs;
  std::vector<std::string> seen;  // "event id (still listed?)"
  auto events = [&](std::string id) {
    return jobs.wrap(id, {.completed = [&, id](const snapshot::BlockJobInfo&) {
                            seen.push_back(fmt::format("completed {} {}", id, jobs.contains(id)));
                          },
                          .cancelled = [&, id](const snapshot::BlockJobInfo&) {
                            seen.push_back(fmt::format("cancelled {} {}", id, jobs.contains(id)));
                          }});
  };
  auto a = std::make_shared<StepJob>(io.get_executor(), "a", events("a"), 3);
  auto b = std::make_shared<StepJob>(io.get_executor(), "b", events("b"), 1000000);
  CHECK(!jobs.add(a));
  CHECK(!jobs.add(b));
  CHECK(jobs.add(std::make_shared<StepJob>(io.get_executor(), "a", snapshot::BlockJobEvents{}, 1)) ==
        std::errc::file_exists);
  CHECK(jobs.find("a") == a);
  CHECK(jobs.find("zz") == nullptr);
  REQUIRE(jobs.list().size() == 2);
  CHECK(jobs.list()[0]->id() == "a");
  a->start();
  b->start();
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    while (jobs.contains("a")) co_await asio::post(io, asio::use_awaitable);
    jobs.cancel_all();
    co_await jobs.wait_idle(std::chrono::seconds(10));
  }, asio::detached);
  io.run();
  CHECK(jobs.size() == 0);
  CHECK(seen == std::vector<std::string>{"completed a false", "cancelled b false"});
}

TEST_CASE("allocation depth: the context of a disk's export answers per layer, live") {
  Chain c;
  std::string message;
  auto disk = open_disk({.name = "vm", .path = c.newcow, .format = DiskFormat::qcow2}, &message);
  INFO(message);
  REQUIRE(disk.has_value());
  auto contexts = disk_export_contexts(*disk);
  REQUIRE(contexts.size() == 1);
  CHECK(contexts[0]->name() == "qemu:allocation-depth");

  auto extents = [&](uint64_t offset, uint64_t length) {
    return run_task([&]() -> asio::awaitable<std::vector<std::pair<uint64_t, uint32_t>>> {
      std::vector<nbd::RawExtent> raw;
      auto ec = co_await contexts[0]->extents(offset, length, raw);
      REQUIRE(!ec);
      std::vector<std::pair<uint64_t, uint32_t>> out;
      for (auto& e : raw) out.emplace_back(e.length, e.flags);
      co_return out;
    }());
  };
  // 0-1M master (3), 1-2M cow (2), 2-3M master's zero-filled tail (3), 3M+64k newcow (1), rest master (3).
  using V = std::vector<std::pair<uint64_t, uint32_t>>;
  CHECK(extents(0, 4 * kMiB) ==
        V{{kMiB, 3}, {kMiB, 2}, {kMiB, 3}, {65536, 1}, {kMiB - 65536, 3}});
  CHECK(extents(kMiB + 4096, 4096).front().second == 2);

  // A write through the export's device is depth 1 at once.
  run_task([&]() -> asio::awaitable<void> {
    std::vector<std::byte> data(65536, std::byte{0x5a});
    auto ec = co_await disk->device->write(0, data, {});
    REQUIRE(!ec);
  }());
  CHECK(extents(0, 2 * kMiB) == V{{65536, 1}, {kMiB - 65536, 3}, {kMiB, 2}});
}

TEST_CASE("chain commands: blockdev-add l2-cache-size reaches the chain; refused for raw") {
  Chain c;
  Harness h;
  h.ok(exec("blockdev-add", fmt::format(R"("node-name": "vm", "driver": "qcow2", "filename": "{}", "l2-cache-size": 131072)",
                                        c.newcow)));
  auto disk = h.disks.find("vm");
  REQUIRE(disk);
  CHECK(disk->spec.l2_cache_bytes == 131072);
  CHECK(disk->chain->options().l2_cache_bytes == 131072);
  CHECK(h.error(exec("blockdev-add", fmt::format(R"("node-name": "r", "driver": "file", "filename": "{}", "l2-cache-size": 65536)",
                                                 c.newcow))) == "GenericError: Invalid parameter 'l2-cache-size'");
  CHECK(h.error(exec("blockdev-add", fmt::format(R"("node-name": "n", "driver": "qcow2", "filename": "{}", "l2-cache-size": -1)",
                                                 c.newcow))) ==
        "GenericError: Parameter 'l2-cache-size' expects a non-negative value");
  CHECK_FALSE(h.disks.find("r"));
  CHECK_FALSE(h.disks.find("n"));
}
