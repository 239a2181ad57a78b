// fleece::Engine: the embedding API over server::Server (owned threads) or
// server::HostedServer (the host's io_context). Both hold the same disk
// table and export registry types; the Engine only translates between the
// public types and them, and owns the order of teardown.
#include "fleece/fleece.hpp"

#include "server/allocation_depth_context.hpp"
#include "server/embed_core.hpp"
#include "server/fleece_table.hpp"
#include "server/qmp_command_table.hpp"
#include "server/server.hpp"
#include "util/log.hpp"

#include <boost/asio/io_context.hpp>

#include <fmt/format.h>

#include <atomic>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>

namespace fleece {

namespace {

log::Level to_log_level(LogLevel level) {
  switch (level) {
    case LogLevel::trace: return log::Level::trace;
    case LogLevel::debug: return log::Level::debug;
    case LogLevel::info: return log::Level::info;
    case LogLevel::warn: return log::Level::warn;
    case LogLevel::error: return log::Level::error;
    case LogLevel::off: return log::Level::off;
  }
  return log::Level::info;
}

server::ServeOptions to_serve_options(const EngineOptions& options) {
  server::ServeOptions out;
  out.threads = options.threads;
  out.log_level = to_log_level(options.log_level);
  out.max_connections = options.max_connections;
  out.handshake_timeout = options.handshake_timeout;
  if (options.listen.empty()) {
    throw StartupError("nothing to listen on; give a listen address (unix:PATH or tcp:HOST:PORT)");
  }
  try {
    for (const auto& text : options.listen) out.listen.push_back(server::parse_listen_address(text));
  } catch (const server::StartupError& e) {
    throw StartupError(e.what());
  }
  return out;
}

ClientInfo to_public(const server::ClientInfo& c) {
  return ClientInfo{c.id, c.export_name, c.peer, c.connected_at, c.read_bytes};
}

Error error(std::errc code, std::string message) {
  return Error{std::make_error_code(code), std::move(message)};
}

Error engine_gone() { return error(std::errc::operation_canceled, "the engine has stopped"); }

}  // namespace

void Engine::Impl::install_hooks() {
  std::shared_lock lock(core->mutex);
  if (!core->registry) return;
  std::function<void(const ClientInfo&)> c, d;
  {
    std::lock_guard guard(mutex);
    c = connected;
    d = disconnected;
  }
  core->registry->set_client_hooks(
      c ? server::ExportRegistry::ClientHook([c](const server::ClientInfo& i) { c(to_public(i)); }) : nullptr,
      d ? server::ExportRegistry::ClientHook([d](const server::ClientInfo& i) { d(to_public(i)); }) : nullptr);
}

// Owned threads, after the threads are joined: handles stop reaching the
// server, then the server (and requests it abandoned) goes away.
void Engine::Impl::teardown() {
  std::unique_ptr<server::Server> dying;
  {
    std::unique_lock lock(core->mutex);
    core->io = nullptr;
    core->disks = nullptr;
    core->registry = nullptr;
    core->accepting = false;
    drop_control();  // stores deleted while the tables still exist
    dying = std::move(server);
  }
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard lock(mutex);
    finished = true;
    callbacks.swap(on_stopped);
  }
  dying.reset();  // abandoned Disk requests complete here, with operation_canceled
  for (auto& callback : callbacks) callback();
}

Engine::Engine(EngineOptions options) : impl_(std::make_shared<Impl>()) {
  log::set_level(to_log_level(options.log_level));
  server::ServeOptions serve = to_serve_options(options);
  try {
    impl_->server = std::make_unique<server::Server>(std::move(serve));
  } catch (const server::StartupError& e) {
    throw StartupError(e.what());
  }
  Impl& s = *impl_;
  s.control = &s.server->control_context();
  s.core->io = s.control;
  s.core->disks = &s.server->disks();
  s.core->registry = &s.server->registry();
  s.addresses = s.server->listen_addresses();
  s.ports = s.server->bound_ports();
  s.make_control(options.store_dir);
}

Engine::Engine(EngineOptions options, boost::asio::io_context& io) : impl_(std::make_shared<Impl>()) {
  log::set_level(to_log_level(options.log_level));
  server::ServeOptions serve = to_serve_options(options);
  try {
    impl_->hosted = std::make_shared<server::HostedServer>(io, std::move(serve));
  } catch (const server::StartupError& e) {
    throw StartupError(e.what());
  }
  Impl& s = *impl_;
  s.control = &io;
  s.core->io = &io;
  s.core->disks = &s.hosted->disks();
  s.core->registry = &s.hosted->registry();
  s.addresses = s.hosted->listen_addresses();
  s.ports = s.hosted->bound_ports();
  s.make_control(options.store_dir);
}

Engine::~Engine() {
  if (!impl_) return;
  stop();
  if (impl_->server || !impl_->hosted) {
    wait();
    return;
  }
  // The host's context: the shutdown finishes there, holding what it needs.
  std::unique_lock lock(impl_->core->mutex);
  impl_->core->io = nullptr;
  impl_->core->disks = nullptr;
  impl_->core->registry = nullptr;
  impl_->core->accepting = false;
  impl_->drop_control();
  impl_->hosted.reset();
}

void Engine::start() {
  Impl& s = *impl_;
  {
    std::lock_guard lock(s.mutex);
    if (s.started || s.stopping.load()) return;
    s.started = true;
  }
  {
    std::unique_lock lock(s.core->mutex);
    if (!s.core->io || s.core->stopped) return;
    s.core->accepting = true;
  }
  if (s.server) s.server->start();
  if (s.hosted) s.hosted->start();
}

void Engine::stop(std::function<void()> on_stopped) {
  Impl& s = *impl_;
  {
    std::unique_lock lock(s.core->mutex);
    s.core->accepting = false;
    s.core->stopped = true;
  }
  s.stopping.store(true);
  if (s.hosted) {
    s.hosted->stop(std::move(on_stopped));
    return;
  }
  {
    std::lock_guard lock(s.mutex);
    if (!s.finished) {
      if (on_stopped) s.on_stopped.push_back(std::move(on_stopped));
      on_stopped = nullptr;
    }
  }
  if (on_stopped) {
    on_stopped();  // already finished
    return;
  }
  // Between teardown and here nothing can destroy the server but wait(),
  // which needs this stop() to have been called first or a start().
  std::shared_lock lock(s.core->mutex);
  if (s.server) s.server->stop();
}

void Engine::wait() {
  Impl& s = *impl_;
  if (s.hosted) {
    s.hosted->wait();
    return;
  }
  {
    // teardown() sets finished before it destroys the context: checked
    // under this lock, the context is alive.
    std::lock_guard lock(s.mutex);
    if (s.finished) return;
    if (s.control->get_executor().running_in_this_thread()) {
      throw std::logic_error("fleece::Engine::wait() called on one of the engine's own threads");
    }
  }
  std::lock_guard waiting(s.wait_mutex);
  {
    std::lock_guard lock(s.mutex);
    if (s.finished) return;
    if (!s.started && !s.stopping.load()) return;  // nothing runs, nothing to wait for
  }
  server::Server* server = nullptr;
  {
    std::shared_lock lock(s.core->mutex);
    server = s.server.get();
  }
  if (server) server->wait();  // only teardown() destroys it, and we hold wait_mutex
  s.teardown();
}

bool Engine::stopping() const { return impl_->stopping.load(); }

Disk Engine::open_disk(const DiskOptions& options, Error* error_out) {
  auto fail = [&](Error e) {
    if (error_out) *error_out = std::move(e);
    return Disk();
  };
  if (options.name.empty()) return fail(error(std::errc::invalid_argument, "a disk needs a name"));
  if (options.path.empty()) {
    return fail(error(std::errc::invalid_argument, fmt::format("disk {}: give the path of an image", options.name)));
  }
  server::DiskSpec spec;
  spec.name = options.name;
  spec.path = options.path;
  spec.read_only = options.read_only;
  spec.cache = options.cache == CacheMode::none ? server::CacheMode::none : server::CacheMode::writeback;

  std::shared_lock lock(impl_->core->mutex);
  server::DiskTable* disks = impl_->core->disks;
  if (!disks) return fail(engine_gone());
  if (disks->find(spec.name)) {
    return fail(error(std::errc::file_exists, fmt::format("disk {}: the name is in use; close it first or pick another", spec.name)));
  }
  std::string message;
  auto disk = server::open_disk(spec, &message);
  if (!disk) return fail(Error{disk.error(), message});
  const uint64_t size = disk->device->size();
  if (disks->add(std::move(*disk))) {
    return fail(error(std::errc::file_exists, fmt::format("disk {}: the name is in use; close it first or pick another", spec.name)));
  }
  FLEECE_LOG_INFO("embed", "disk {}: {} ({} bytes{})", spec.name, spec.path, size, spec.read_only ? ", read-only" : "");
  impl_->sweep_stale_stores(spec.name);
  if (error_out) *error_out = Error{};
  return Disk(make_disk_impl(impl_->core, spec.name, size, spec.read_only));
}

Disk Engine::disk(std::string_view name) const {
  std::shared_lock lock(impl_->core->mutex);
  if (!impl_->core->disks) return Disk();
  auto found = impl_->core->disks->find(name);
  if (!found) return Disk();
  return Disk(make_disk_impl(impl_->core, found->name, found->device->size(), found->spec.read_only));
}

Error Engine::close_disk(std::string_view name) {
  std::shared_lock lock(impl_->core->mutex);
  if (!impl_->core->disks) return engine_gone();
  for (const auto& e : impl_->core->registry->exports()) {
    if (e->disk_name() == name) {
      return error(std::errc::device_or_resource_busy,
                   fmt::format("disk {}: export {} uses it; remove the export first", name, e->name()));
    }
  }
  if (impl_->core->disks->remove(name)) {
    return error(std::errc::no_such_device_or_address, fmt::format("disk {}: no such disk", name));
  }
  return {};
}

Error Engine::add_export(const ExportOptions& options) {
  std::shared_lock lock(impl_->core->mutex);
  if (!impl_->core->registry) return engine_gone();
  auto disk = impl_->core->disks->find(options.disk);
  if (!disk) {
    return error(std::errc::no_such_device_or_address,
                 fmt::format("export {}: no disk named '{}'; open it first", options.name, options.disk));
  }
  if (options.writable && disk->spec.read_only) {
    return error(std::errc::invalid_argument,
                 fmt::format("export {}: disk {} is read-only; export it without writable", options.name, options.disk));
  }
  auto ec = impl_->core->registry->add(options.name, disk->device, options.writable, options.description,
                                       options.disk, disk_export_contexts(*disk));
  if (ec == std::errc::file_exists) {
    return Error{ec, fmt::format("export {}: the name is in use; remove that export first", options.name)};
  }
  if (ec) return Error{ec, fmt::format("export {}: {} (names are at most 4096 bytes)", options.name, ec.message())};
  FLEECE_LOG_INFO("embed", "export {}: disk {}{}", options.name, options.disk, options.writable ? ", writable" : "");
  return {};
}

Error Engine::remove_export(std::string_view name, bool force) {
  std::shared_lock lock(impl_->core->mutex);
  if (!impl_->core->registry) return engine_gone();
  auto mode = force ? server::ExportRegistry::RemoveMode::hard : server::ExportRegistry::RemoveMode::safe;
  auto ec = impl_->core->registry->remove(name, mode);
  if (ec == std::errc::device_or_resource_busy) {
    return Error{ec, fmt::format("export {}: clients are connected; remove it with force to close them", name)};
  }
  if (ec) return Error{ec, fmt::format("export {}: no such export", name)};
  return {};
}

std::vector<ExportInfo> Engine::exports() const {
  std::vector<ExportInfo> out;
  std::shared_lock lock(impl_->core->mutex);
  if (!impl_->core->registry) return out;
  for (const auto& e : impl_->core->registry->exports()) {
    auto stats = e->stats().snapshot();
    ExportInfo info;
    info.name = e->name();
    info.disk = e->disk_name();
    info.description = e->description();
    info.writable = e->writable();
    info.size = e->device()->size();
    info.read_requests = stats.read_requests;
    info.read_bytes = stats.read_bytes;
    info.write_requests = stats.write_requests;
    info.write_bytes = stats.write_bytes;
    info.errors = stats.errors;
    out.push_back(std::move(info));
  }
  return out;
}

std::vector<ClientInfo> Engine::clients() const {
  std::vector<ClientInfo> out;
  std::shared_lock lock(impl_->core->mutex);
  if (!impl_->core->registry) return out;
  for (const auto& c : impl_->core->registry->clients()) out.push_back(to_public(c));
  return out;
}

std::vector<std::string> Engine::listen_addresses() const { return impl_->addresses; }
std::vector<uint16_t> Engine::bound_ports() const { return impl_->ports; }

void Engine::on_client_connected(std::function<void(const ClientInfo&)> hook) {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->connected = std::move(hook);
  }
  impl_->install_hooks();
}

void Engine::on_client_disconnected(std::function<void(const ClientInfo&)> hook) {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->disconnected = std::move(hook);
  }
  impl_->install_hooks();
}

}  // namespace fleece
