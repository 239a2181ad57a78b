// blockdev-snapshot-sync, block-commit and block-job control, with QEMU's
// argument names, answers and error texts (qapi/block-core.json, blockdev.c,
// job.c), and the BLOCK_JOB_COMPLETED / _CANCELLED / _ERROR events.
//
// Differences from QEMU, each refused with a message saying what to do:
//  * block-commit of the active layer (QEMU would start an active commit
//    through the mirror machinery; fleece commits below the active layer
//    only: snapshot first, then commit the layer below);
//  * blockdev-snapshot-sync never reuses or overwrites a file (mode
//    'existing', or a snapshot-file that exists);
//  * a read-only disk takes neither.
// snapshot-node-name is accepted and not used: the disk keeps its node name
// and the new overlay is known by its file name, as every other layer.
//
// Jobs run on the executor of the QMP handler that started them (the control
// context); they leave query-block-jobs when they conclude, just before
// their event is sent (QEMU's auto-dismiss).
#include "cow/backing_chain.hpp"
#include "cow/cbw_filter.hpp"
#include "server/disk_table.hpp"
#include "server/job_table.hpp"
#include "server/qmp_arguments.hpp"
#include "server/qmp_commands.hpp"
#include "snapshot/chain_snapshot.hpp"
#include "snapshot/commit_job.hpp"
#include "util/log.hpp"

#include <boost/asio/this_coro.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include <cctype>
#include <functional>
#include <optional>

namespace fleece::server {

namespace json = boost::json;
namespace asio = boost::asio;
using boost::asio::awaitable;

namespace {

using EmitEvent = std::function<void(std::string_view, std::string)>;

bool read_only(const Disk& disk) {
  return disk.spec.read_only || disk.device->capabilities().read_only;
}

// QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'.
bool well_formed_id(std::string_view id) {
  if (id.empty() || !std::isalpha(static_cast<unsigned char>(id[0]))) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') return false;
  }
  return true;
}

json::object job_event_data(const snapshot::BlockJobInfo& info) {
  return {{"type", info.type},
          {"device", info.id},
          {"len", info.len},
          {"offset", info.offset},
          {"speed", info.speed}};
}

json::object query_job(const snapshot::BlockJobInfo& info) {
  json::object out = job_event_data(info);
  out["busy"] = info.busy;
  out["paused"] = info.paused;
  out["io-status"] = "ok";
  out["ready"] = info.status == snapshot::BlockJobStatus::ready;
  out["status"] = std::string(snapshot::to_string(info.status));
  out["auto-finalize"] = true;
  out["auto-dismiss"] = true;
  if (!info.error.empty()) out["error"] = info.error;
  return out;
}

snapshot::BlockJobEvents qmp_job_events(const EmitEvent& emit) {
  if (!emit) return {};
  return {.completed =
              [emit](const snapshot::BlockJobInfo& info) {
                json::object data = job_event_data(info);
                if (!info.error.empty()) data["error"] = info.error;
                emit("BLOCK_JOB_COMPLETED", json::serialize(data));
              },
          .cancelled =
              [emit](const snapshot::BlockJobInfo& info) {
                emit("BLOCK_JOB_CANCELLED", json::serialize(job_event_data(info)));
              },
          .error =
              [emit](const snapshot::BlockJobInfo& info, std::string_view operation, std::string_view action) {
                emit("BLOCK_JOB_ERROR", json::serialize(json::object{
                                            {"device", info.id}, {"operation", operation}, {"action", action}}));
              }};
}

QmpError job_not_found(std::string_view id) {
  return {qmp_class::kDeviceNotActive, fmt::format("Block job '{}' not found", id)};
}

std::vector<QmpParam> snapshot_params() {
  QmpParam format = qmp_optional("format", QmpType::string);
  QmpParam mode = qmp_optional("mode", QmpType::string);
  mode.choices = {"existing", "absolute-paths"};
  return {qmp_optional("device", QmpType::string), qmp_optional("node-name", QmpType::string),
          qmp_required("snapshot-file", QmpType::string), qmp_optional("snapshot-node-name", QmpType::string),
          format, mode};
}

std::vector<QmpParam> commit_params() {
  QmpParam on_error = qmp_optional("on-error", QmpType::string);
  on_error.choices = {"report"};  // the only policy fleece's jobs have
  return {qmp_optional("job-id", QmpType::string),       qmp_required("device", QmpType::string),
          qmp_optional("base", QmpType::string),         qmp_optional("top", QmpType::string),
          qmp_optional("backing-file", QmpType::string), qmp_optional("speed", QmpType::integer),
          on_error,                                      qmp_optional("auto-finalize", QmpType::boolean),
          qmp_optional("auto-dismiss", QmpType::boolean)};
}

awaitable<QmpResult> snapshot_sync(DiskTable* disks, const json::object& args) {
  const std::string device = qmp_arg_string(args, "device");
  const std::string node = qmp_arg_string(args, "node-name");
  const std::string file = qmp_arg_string(args, "snapshot-file");
  std::optional<Disk> disk;
  if (!device.empty()) disk = disks->find(device);
  if (!disk && !node.empty()) disk = disks->find(node);
  if (!disk || !disk->chain || !disk->filter) {
    co_return QmpError::generic(fmt::format("Cannot find device='{}' nor node-name='{}'", device, node));
  }
  if (qmp_arg_string(args, "mode", "absolute-paths") == "existing") {
    co_return QmpError::generic(
        "mode 'existing' is not supported: fleece creates the overlay itself; leave 'mode' out");
  }
  if (read_only(*disk)) {
    co_return QmpError::generic(fmt::format("Node '{}' is read-only: a snapshot overlay would never be written",
                                            disk->name));
  }
  if (file.empty()) co_return QmpError::generic("Parameter 'snapshot-file' must not be empty");

  std::shared_ptr<cow::CbwFilter> filter = disk->filter;
  snapshot::ChainSnapshotOptions options{.file = file, .format = qmp_arg_string(args, "format", "qcow2")};
  snapshot::Quiesce quiesce{.drain = [filter] { return filter->close_gate(); },
                            .resume = [filter] { filter->open_gate(); }};
  std::shared_ptr<cow::BackingChain> chain = disk->chain;
  std::string why;
  std::error_code ec = co_await snapshot::take_chain_snapshot(chain, options, &why, quiesce);
  if (ec) {
    co_return QmpError::generic(why.empty() ? fmt::format("{}: snapshot failed: {}", file, ec.message()) : why);
  }
  FLEECE_LOG_INFO("qmp", "blockdev-snapshot-sync {}: {} is the active layer", disk->name, file);
  co_return json::value(json::object());
}

awaitable<QmpResult> block_commit(DiskTable* disks, JobTable* jobs, const EmitEvent& emit,
                                  const json::object& args) {
  const std::string device = qmp_arg_string(args, "device");
  auto disk = disks->find(device);
  // libvirt probes with the DeviceNotFound class: the device is looked up first.
  if (!disk || !disk->chain) co_return QmpError::device_not_found(fmt::format("Device '{}' not found", device));
  const std::shared_ptr<cow::BackingChain> chain = disk->chain;
  if (auto owner = chain->job()) {
    co_return QmpError::generic(
        fmt::format("Node '{}' is busy: block device is in use by block job: commit ('{}')", device, *owner));
  }
  if (read_only(*disk)) {
    co_return QmpError::generic(fmt::format("Node '{}' is read-only: block-commit needs a writable disk", device));
  }
  const std::string top = qmp_arg_string(args, "top");
  const std::string base = qmp_arg_string(args, "base");
  const std::optional<std::size_t> t = top.empty() ? std::optional<std::size_t>(0) : chain->find(top);
  if (!t) co_return QmpError::generic(fmt::format("Top image file {} not found", top));
  const std::size_t last = chain->length() - 1;
  const std::optional<std::size_t> b = base.empty() ? std::optional<std::size_t>(last) : chain->find(base);
  if (b && *b == *t) co_return QmpError::generic("cannot commit an image into itself");
  if (!b || *b < *t) co_return QmpError::generic(fmt::format("Can't find '{}' in the backing chain", base));
  if (qmp_has_arg(args, "backing-file") && *t == 0) {
    co_return QmpError::generic("'backing-file' specified, but 'top' is the active layer");
  }
  const int64_t speed = qmp_arg_int(args, "speed", 0);
  if (speed < 0) co_return QmpError::generic("Invalid parameter 'speed'");
  if (!qmp_arg_bool(args, "auto-finalize", true) || !qmp_arg_bool(args, "auto-dismiss", true)) {
    co_return QmpError::generic("fleece's jobs finalize and dismiss themselves; leave auto-finalize/auto-dismiss out");
  }
  const std::string id = qmp_arg_string(args, "job-id", device);
  if (!well_formed_id(id)) co_return QmpError::generic(fmt::format("Invalid job ID '{}'", id));
  if (jobs->contains(id)) co_return QmpError::generic(fmt::format("Job ID '{}' already in use", id));

  snapshot::CommitJobOptions options{.job_id = id,
                                     .device = device,
                                     .top = top,
                                     .base = base,
                                     .speed = static_cast<uint64_t>(speed),
                                     .backing_file = qmp_arg_string(args, "backing-file")};
  const asio::any_io_executor executor = co_await asio::this_coro::executor;
  std::string why;
  auto job = snapshot::CommitJob::create(executor, chain, std::move(options),
                                         jobs->wrap(id, qmp_job_events(emit)), &why);
  if (!job) co_return QmpError::generic(why.empty() ? job.error().message() : why);
  if (jobs->add(*job)) co_return QmpError::generic(fmt::format("Job ID '{}' already in use", id));
  FLEECE_LOG_INFO("qmp", "block-commit {}: {} into {} as job '{}'{}", device, (*job)->top_path(),
                  (*job)->base_path(), id, speed ? fmt::format(" at {} B/s", speed) : "");
  (*job)->start();
  co_return json::value(json::object());
}

}  // namespace

void register_chain_commands(QmpCommandTable& table, const QmpServices& services) {
  DiskTable* disks = services.disks;
  // Without the server's table (unit tests), one that lives as long as the commands.
  std::shared_ptr<JobTable> own = services.jobs ? nullptr : std::make_shared<JobTable>();
  JobTable* jobs = services.jobs ? services.jobs : own.get();
  EmitEvent emit = services.emit_event;

  table.add({"blockdev-snapshot-sync", snapshot_params(), [disks](const json::object& args) {
               return snapshot_sync(disks, args);
             }});

  table.add({"block-commit", commit_params(), [disks, jobs, own, emit](const json::object& args) {
               return block_commit(disks, jobs, emit, args);
             }});

  table.add({"query-block-jobs", {}, [jobs, own](const json::object&) -> awaitable<QmpResult> {
               json::array out;
               for (const auto& job : jobs->list()) out.push_back(query_job(job->info()));
               co_return json::value(std::move(out));
             }});

  // block-job-*: find the job by id (QEMU's "device"), then act on it.
  using JobAction = std::function<std::optional<QmpError>(snapshot::BlockJob&, const json::object&)>;
  auto job_command = [jobs, own](JobAction action) {
    return [jobs, own, action = std::move(action)](const json::object& args) -> awaitable<QmpResult> {
      const std::string id = qmp_arg_string(args, "device");
      auto job = jobs->find(id);
      if (!job) co_return job_not_found(id);
      if (auto error = action(*job, args)) co_return *error;
      co_return json::value(json::object());
    };
  };
  const QmpParam job_id = qmp_required("device", QmpType::string);

  table.add({"block-job-set-speed", {job_id, qmp_required("speed", QmpType::integer)},
             job_command([](snapshot::BlockJob& job, const json::object& args) -> std::optional<QmpError> {
               const int64_t speed = qmp_arg_int(args, "speed", 0);
               if (speed < 0) return QmpError::generic("Invalid parameter 'speed'");
               job.set_speed(static_cast<uint64_t>(speed));
               return std::nullopt;
             })});

  table.add({"block-job-cancel", {job_id, qmp_optional("force", QmpType::boolean)},
             job_command([](snapshot::BlockJob& job, const json::object&) -> std::optional<QmpError> {
               job.cancel();  // also a paused job: cancel wins over pause
               return std::nullopt;
             })});

  table.add({"block-job-pause", {job_id},
             job_command([](snapshot::BlockJob& job, const json::object&) -> std::optional<QmpError> {
               if (job.info().paused) return QmpError::generic("Job is already paused");
               job.pause();
               return std::nullopt;
             })});

  table.add({"block-job-resume", {job_id},
             job_command([](snapshot::BlockJob& job, const json::object&) -> std::optional<QmpError> {
               if (!job.info().paused) return QmpError::generic("Can't resume a job that was not paused");
               job.resume();
               return std::nullopt;
             })});
}

}  // namespace fleece::server
