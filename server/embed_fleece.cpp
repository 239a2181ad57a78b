// fleece::Engine: fleeces and dirty bitmaps for a host without a QMP socket.
//
// Each call that changes something runs the QMP command handler of the same
// name (fleece-start, block-dirty-bitmap-add, ...) from the engine's own
// command table, with its arguments checked the same way, on the engine's
// context, one command at a time (as one QMP monitor would): the checks,
// the write pause, the bitmap freeze and the error messages are those of
// `fleece serve`. The queries read the fleece table and the disks' bitmaps
// directly, as query-fleeces and query-block do.
#include "fleece/fleece.hpp"

#include "cow/dirty_bitmap.hpp"
#include "server/disk_bitmaps.hpp"
#include "server/embed_core.hpp"
#include "server/fleece_table.hpp"
#include "server/qmp_arguments.hpp"
#include "server/qmp_command_table.hpp"
#include "server/qmp_commands.hpp"
#include "util/log.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/json/parse.hpp>

#include <fmt/format.h>

#include <future>
#include <optional>

namespace fleece {

namespace asio = boost::asio;
namespace json = boost::json;

namespace {

Error refusal(std::errc code, std::string message) { return Error{std::make_error_code(code), std::move(message)}; }

Error from_qmp(const server::QmpError& e) {
  const std::errc code = e.error_class == server::qmp_class::kDeviceNotFound
                             ? std::errc::no_such_device_or_address
                             : std::errc::invalid_argument;
  return refusal(code, e.desc);
}

// One command: its arguments and outcome. The promise is kept exactly once:
// with the handler's result, or with a refusal if the work is dropped
// unfinished (its io_context destroyed with it still queued).
struct Call {
  const server::QmpCommand* command = nullptr;
  json::object args;
  std::promise<Error> done;
  bool kept = false;

  void keep(Error outcome) {
    kept = true;
    done.set_value(std::move(outcome));
  }
  ~Call() {
    if (!kept) done.set_value(refusal(std::errc::operation_canceled, "the engine has stopped"));
  }
};

asio::awaitable<void> run_call(std::shared_ptr<Call> call) {
  Error outcome;
  try {
    const server::QmpCommand& command = *call->command;
    server::QmpResult result = co_await command.handler(call->args);
    if (!result.ok()) outcome = from_qmp(result.error());
  } catch (const std::exception& e) {
    FLEECE_LOG_ERROR("embed", "{} failed: {}", call->command->name, e.what());
    outcome = refusal(std::errc::io_error, fmt::format("{} failed: {}", call->command->name, e.what()));
  }
  call->keep(std::move(outcome));
}

std::string_view policy_name(OnCbwError policy) {
  return policy == OnCbwError::break_guest_write ? "break-guest-write" : "break-snapshot";
}

FleeceInfo to_public(const server::FleeceInfo& f) {
  FleeceInfo out;
  out.id = f.id;
  out.write_pause = f.write_pause;
  out.on_cbw_error = f.policy.on_error == cow::OnCbwError::break_guest_write ? OnCbwError::break_guest_write
                                                                              : OnCbwError::break_snapshot;
  out.cbw_timeout = f.policy.cbw_timeout;
  out.max_store_bytes = f.policy.max_store_bytes;
  for (const auto& m : f.members) {
    FleeceDiskInfo d;
    d.disk = m.device;
    d.export_name = m.export_name;
    d.store = m.store;
    d.cluster_size = m.cluster_size;
    d.granularity = m.granularity;
    d.preserved_bytes = m.stats.preserved_bytes;
    d.preserved_clusters = m.stats.copies;
    d.zero_clusters = m.stats.zero_marks;
    d.freed_clusters = m.stats.freed_clusters;
    d.store_bytes = m.stats.stored_bytes;
    d.read_bytes = m.read_bytes;
    for (const auto& c : m.clients) d.clients.push_back({c.id, c.export_name, c.peer, c.connected_at, c.read_bytes});
    d.broken = m.stats.broken;
    if (m.stats.broken) d.broken_reason = m.stats.broken_reason.message();
    out.disks.push_back(std::move(d));
  }
  return out;
}

json::object node_name(std::string_view disk, std::string_view name) {
  return json::object{{"node", disk}, {"name", name}};
}

}  // namespace

void Engine::Impl::make_control(const std::string& store_dir) {
  std::weak_ptr<BrokenHook> weak = broken;
  auto emit = [weak](std::string_view name, std::string data_json) {
    auto box = weak.lock();
    if (!box || name != "FLEECE_BROKEN") return;
    std::function<void(const FleeceBroken&)> hook;
    {
      std::lock_guard lock(box->mutex);
      hook = box->hook;
    }
    if (!hook) return;
    std::error_code ec;
    json::value data = json::parse(data_json, ec);
    const json::object* o = ec ? nullptr : data.if_object();
    if (!o) return;
    hook(FleeceBroken{server::qmp_arg_string(*o, "id"), server::qmp_arg_string(*o, "device"),
                      server::qmp_arg_string(*o, "reason")});
  };
  std::unique_lock lock(core->mutex);
  fleeces = std::make_unique<server::FleeceTable>(*core->disks, *core->registry,
                                                  server::FleeceTable::Options{store_dir, emit});
  server::QmpServices services;
  services.disks = core->disks;
  services.registry = core->registry;
  services.emit_event = emit;
  services.fleeces = fleeces.get();
  commands = server::make_qmp_command_table(std::move(services));
}

void Engine::Impl::drop_control() {
  commands.reset();
  fleeces.reset();  // deletes the stores it still holds
}

void Engine::Impl::sweep_stale_stores(std::string_view disk) {
  if (!fleeces || !core->disks) return;
  if (auto found = core->disks->find(disk)) fleeces->remove_stale_stores({*found});
}

namespace {

// Runs QMP command `name` on the engine's context and waits for it.
Error run_command(Engine::Impl& s, std::string_view name, json::object args) {
  auto call = std::make_shared<Call>();
  call->args = std::move(args);
  auto future = call->done.get_future();
  std::lock_guard serial(s.command_mutex);
  {
    std::shared_lock lock(s.core->mutex);
    if (!s.core->io || !s.commands) return refusal(std::errc::operation_canceled, "the engine has stopped");
    if (!s.core->accepting) {
      return s.core->stopped ? refusal(std::errc::operation_canceled, "the engine is stopping")
                             : refusal(std::errc::resource_unavailable_try_again,
                                       "the engine is not started yet; call start() first");
    }
    if (s.core->io->get_executor().running_in_this_thread()) {
      return refusal(std::errc::resource_deadlock_would_occur,
                     fmt::format("{}: a blocking call made on an engine thread", name));
    }
    call->command = s.commands->find(name);
    if (!call->command) return refusal(std::errc::function_not_supported, fmt::format("{}: not offered", name));
    if (auto bad = server::check_qmp_arguments(call->command->params, call->args)) return from_qmp(*bad);
    // Posted (never run inline) under the lock, as Disk requests are: the
    // context and the command table outlive every piece of work on it.
    asio::io_context* io = s.core->io;
    asio::post(*io, [io, call = std::move(call)]() mutable {
      asio::co_spawn(*io, run_call(std::move(call)), asio::detached);
    });
  }
  return future.get();
}

}  // namespace

FleeceInfo Engine::start_fleece(const FleeceOptions& options, Error* error_out) {
  json::array disks;
  for (const auto& d : options.disks) disks.push_back(json::string(d));
  json::object args{{"id", options.id},
                    {"devices", std::move(disks)},
                    {"on-cbw-error", policy_name(options.on_cbw_error)},
                    {"cbw-timeout", options.cbw_timeout.count()},
                    {"max-store-bytes", options.max_store_bytes}};
  if (options.cluster_size) args["cluster-size"] = options.cluster_size;
  if (options.granularity) args["granularity"] = options.granularity;
  if (!options.bitmaps.empty()) {
    json::array bitmaps;
    for (const auto& b : options.bitmaps) bitmaps.push_back(node_name(b.disk, b.name));
    args["bitmaps"] = std::move(bitmaps);
  }
  Error error = run_command(*impl_, "fleece-start", std::move(args));
  FleeceInfo out;
  if (!error) {
    for (auto& f : fleeces()) {
      if (f.id == options.id) out = std::move(f);
    }
  }
  if (error_out) *error_out = std::move(error);
  return out;
}

Error Engine::stop_fleece(std::string_view id) {
  return run_command(*impl_, "fleece-stop", json::object{{"id", id}});
}

std::vector<FleeceInfo> Engine::fleeces() const {
  std::vector<FleeceInfo> out;
  std::shared_lock lock(impl_->core->mutex);
  if (!impl_->fleeces) return out;
  for (const auto& f : impl_->fleeces->list()) out.push_back(to_public(f));
  return out;
}

void Engine::on_fleece_broken(std::function<void(const FleeceBroken&)> hook) {
  std::lock_guard lock(impl_->broken->mutex);
  impl_->broken->hook = std::move(hook);
}

Error Engine::add_bitmap(const BitmapOptions& options) {
  json::object args = node_name(options.disk, options.name);
  args["granularity"] = options.granularity;
  args["persistent"] = options.persistent;
  args["disabled"] = options.disabled;
  return run_command(*impl_, "block-dirty-bitmap-add", std::move(args));
}

Error Engine::remove_bitmap(std::string_view disk, std::string_view name) {
  return run_command(*impl_, "block-dirty-bitmap-remove", node_name(disk, name));
}

Error Engine::clear_bitmap(std::string_view disk, std::string_view name) {
  return run_command(*impl_, "block-dirty-bitmap-clear", node_name(disk, name));
}

Error Engine::enable_bitmap(std::string_view disk, std::string_view name) {
  return run_command(*impl_, "block-dirty-bitmap-enable", node_name(disk, name));
}

Error Engine::disable_bitmap(std::string_view disk, std::string_view name) {
  return run_command(*impl_, "block-dirty-bitmap-disable", node_name(disk, name));
}

Error Engine::merge_bitmaps(std::string_view disk, std::string_view target, const std::vector<BitmapRef>& sources) {
  json::array bitmaps;
  for (const auto& b : sources) bitmaps.push_back(node_name(b.disk, b.name));
  return run_command(*impl_, "block-dirty-bitmap-merge",
                     json::object{{"node", disk}, {"target", target}, {"bitmaps", std::move(bitmaps)}});
}

std::vector<BitmapInfo> Engine::bitmaps(std::string_view disk) const {
  std::vector<BitmapInfo> out;
  std::shared_lock lock(impl_->core->mutex);
  if (!impl_->core->disks) return out;
  auto found = impl_->core->disks->find(disk);
  if (!found || !found->bitmaps) return out;
  for (const auto& e : found->bitmaps->list()) {
    const cow::DirtyBitmap& b = *e.bitmap;
    out.push_back(BitmapInfo{e.name, b.granularity(), b.dirty_bytes(), b.enabled(), b.persistent(), e.busy,
                             b.inconsistent(), e.frozen});
  }
  return out;
}

}  // namespace fleece
