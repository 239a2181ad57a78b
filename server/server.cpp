#include "server/server.hpp"

#include "server/allocation_depth_context.hpp"
#include "server/connection.hpp"
#include "server/disk_bitmaps.hpp"
#include "server/job_table.hpp"
#include "server/listener.hpp"
#include "server/runtime.hpp"
#include "tls/server_context.hpp"
#include "util/log.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <fmt/format.h>

#include <csignal>
#include <map>
#include <mutex>
#include <set>

namespace fleece::server {

namespace asio = boost::asio;
using boost::system::error_code;

constexpr int kUnixSendBuffer = 4 << 20;  // capped by net.core.wmem_max

struct Server::Impl {
  explicit Impl(ServeOptions opts) : options(std::move(opts)), runtime(effective_threads(options)) {}

  ServeOptions options;
  Runtime runtime;  // first: outlives every IO object below
  ExportRegistry registry;
  DiskTable disks;
  JobTable jobs;  // block jobs on the disks; cancelled at shutdown
  std::vector<std::unique_ptr<Listener>> listeners;
  std::optional<asio::signal_set> signals;
  std::unique_ptr<tls::ServerContext> tls;  // null when --tls off

  std::atomic<bool> stopping{false};
  bool started = false;
  bool joined = false;

  std::mutex mutex;  // guards connections
  std::map<uint64_t, std::weak_ptr<ConnectionHandle>> connections;
  uint64_t next_connection = 1;
  std::atomic<size_t> live{0};

  asio::io_context& control() { return runtime.shard(0); }

  asio::awaitable<void> accept_loop(Listener* listener);
  asio::awaitable<void> shutdown();
  void close_all();
};

asio::awaitable<void> Server::Impl::accept_loop(Listener* listener) {
  asio::steady_timer backoff(control());
  for (;;) {
    asio::io_context& shard = runtime.next_shard();
    Socket socket(shard);
    error_code ec;
    co_await listener->acceptor().async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
    if (stopping.load()) break;
    if (ec) {
      if (ec == asio::error::operation_aborted || !listener->acceptor().is_open()) break;
      // Out of fds or a transient network error: wait a little, do not spin.
      FLEECE_LOG_WARN("server", "{}: accept failed: {}", listener->address(), ec.message());
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (live.load() >= options.max_connections) {
      FLEECE_LOG_WARN("server", "{}: connection limit ({}) reached, refusing {}", listener->address(),
                      options.max_connections, peer_name(socket.native_handle()));
      socket.close(ec);
      continue;
    }
    if (is_tcp(socket.native_handle())) {
      int one = 1;
      ::setsockopt(socket.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    } else {
      // Unix sockets do not autotune: with the default ~200 KiB a 256 KiB
      // READ reply needs several sends and wakes the client for each part.
      int size = kUnixSendBuffer;
      ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    }
    ConnectionSettings settings;
    settings.registry = &registry;
    settings.stopping = &stopping;
    settings.handshake_timeout = options.handshake_timeout;
    settings.tls = tls.get();
    settings.tls_mode = options.tls.mode == TlsSetting::require ? nbd::TlsMode::require
                        : options.tls.mode == TlsSetting::on    ? nbd::TlsMode::on
                                                                : nbd::TlsMode::off;
    std::lock_guard lock(mutex);
    uint64_t id = next_connection++;
    live.fetch_add(1);
    auto handle = start_connection(std::move(socket), settings, [this, id] {
      std::lock_guard lock(mutex);
      connections.erase(id);
      live.fetch_sub(1);
    });
    connections.emplace(id, handle);
  }
}

void Server::Impl::close_all() {
  std::vector<std::shared_ptr<ConnectionHandle>> handles;
  {
    std::lock_guard lock(mutex);
    for (auto& [id, weak] : connections) {
      if (auto h = weak.lock()) handles.push_back(std::move(h));
    }
  }
  for (auto& h : handles) h->abort();
}

asio::awaitable<void> Server::Impl::shutdown() {
  FLEECE_LOG_INFO("server", "shutting down");
  for (auto& listener : listeners) listener->close();
  jobs.cancel_all();  // they wind down while connections finish
  std::vector<std::shared_ptr<ConnectionHandle>> handles;
  {
    std::lock_guard lock(mutex);
    for (auto& [id, weak] : connections) {
      if (auto h = weak.lock()) handles.push_back(std::move(h));
    }
  }
  for (auto& h : handles) h->request_stop();
  handles.clear();

  asio::steady_timer tick(control());
  error_code ec;
  auto deadline = std::chrono::steady_clock::now() + kStopGrace;
  while (live.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    tick.expires_after(std::chrono::milliseconds(10));
    co_await tick.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (live.load() > 0) {
    FLEECE_LOG_WARN("server", "{} connection(s) still open after {} s, closing them", live.load(),
                    kStopGrace.count());
    close_all();
    deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (live.load() > 0 && std::chrono::steady_clock::now() < deadline) {
      tick.expires_after(std::chrono::milliseconds(10));
      co_await tick.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  // A cancelled commit flushes its base and reopens it read-only.
  co_await jobs.wait_idle(kStopGrace);
  if (jobs.size() > 0) FLEECE_LOG_WARN("server", "{} block job(s) did not stop in time", jobs.size());

  // Flush every writable device once: acknowledged writes reach the disk.
  std::set<block::Device*> flushed;
  auto flush = [&](const std::shared_ptr<block::Device>& device, const std::string& name)
      -> asio::awaitable<void> {
    if (!device || device->capabilities().read_only || !flushed.insert(device.get()).second) co_return;
    std::error_code fec = co_await device->flush();
    if (fec) FLEECE_LOG_ERROR("server", "flushing {} failed: {}", name, fec.message());
  };
  for (const auto& disk : disks.list()) {
    if (!disk.spec.read_only) co_await flush(disk.device, disk.name);
  }
  for (const auto& e : registry.exports()) {
    if (e->writable()) co_await flush(e->device(), e->name());
  }
  co_await persist_disk_bitmaps(disks);  // nothing writes any more: in_use cleared
  if (signals) signals->cancel(ec);
  FLEECE_LOG_INFO("server", "stopped");
  runtime.stop();
}

Server::Server(ServeOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  Impl& s = *impl_;
  if (s.options.tls.mode != TlsSetting::off) {
    // Credentials first: a bad certificate must not leave disks open or sockets bound.
    try {
      s.tls = std::make_unique<tls::ServerContext>(tls::ServerConfig{
          s.options.tls.creds_dir, s.options.tls.psk_file, s.options.tls.verify_peer, s.options.tls.authz});
    } catch (const tls::ConfigError& e) {
      throw StartupError(e.what());
    }
  }
  for (const auto& spec : s.options.disks) {
    std::string message;
    auto disk = open_disk(spec, &message);
    if (!disk) throw StartupError(message);
    auto device = disk->device;
    auto contexts = disk_export_contexts(*disk);
    if (s.disks.add(std::move(*disk))) {
      throw StartupError(fmt::format("disk {}: the name is used twice", spec.name));
    }
    if (auto ec = s.registry.add(spec.name, device, !spec.read_only, {}, spec.name, std::move(contexts))) {
      throw StartupError(fmt::format("disk {}: cannot export it: {}", spec.name, ec.message()));
    }
    FLEECE_LOG_INFO("server", "disk {}: {} ({} bytes{})", spec.name, spec.path, device->size(),
                    spec.read_only ? ", read-only" : "");
  }
  for (int fd : activation_fds()) s.listeners.push_back(Listener::adopt(s.control(), fd));
  for (const auto& address : s.options.listen) s.listeners.push_back(Listener::bind(s.control(), address));
  if (s.listeners.empty()) throw StartupError("nothing to listen on; give --listen unix:PATH or tcp:HOST:PORT");
  for (const auto& l : s.listeners) FLEECE_LOG_INFO("server", "listening on {}", l->address());
}

Server::~Server() {
  if (!impl_) return;
  if (impl_->started) {
    stop();
    wait();
  }
}

void Server::start() {
  Impl& s = *impl_;
  if (s.started) return;
  s.started = true;
  for (auto& listener : s.listeners) {
    asio::co_spawn(s.control(), s.accept_loop(listener.get()), asio::detached);
  }
  s.runtime.start();
}

void Server::stop() {
  Impl& s = *impl_;
  bool expected = false;
  if (!s.stopping.compare_exchange_strong(expected, true)) return;
  asio::co_spawn(s.control(), s.shutdown(), asio::detached);
}

void Server::wait() {
  Impl& s = *impl_;
  if (s.joined || !s.started) return;
  s.runtime.join();
  s.joined = true;
}

int Server::run(std::function<void()> on_started) {
  Impl& s = *impl_;
  s.signals.emplace(s.control(), SIGINT, SIGTERM);
  if (s.tls) s.signals->add(SIGHUP);
  std::function<void(const error_code&, int)> on_signal = [this, &s, &on_signal](const error_code& ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      // New TLS credentials for new connections; the outcome is logged by reload().
      s.tls->reload();
    } else if (!s.stopping.load()) {
      FLEECE_LOG_INFO("server", "signal {}: stopping (again to close connections at once)", sig);
      stop();
    } else {
      FLEECE_LOG_INFO("server", "signal {}: closing every connection now", sig);
      s.close_all();
    }
    s.signals->async_wait(on_signal);
  };
  s.signals->async_wait(on_signal);
  start();
  if (on_started) on_started();
  wait();
  return 0;
}

bool Server::stopping() const { return impl_->stopping.load(); }
ExportRegistry& Server::registry() { return impl_->registry; }
DiskTable& Server::disks() { return impl_->disks; }
JobTable& Server::jobs() { return impl_->jobs; }
asio::io_context& Server::control_context() { return impl_->control(); }
const ServeOptions& Server::options() const { return impl_->options; }

void Server::set_events(ServerEvents events) {
  impl_->registry.set_client_hooks(std::move(events.client_connected), std::move(events.client_disconnected));
}

std::vector<std::string> Server::listen_addresses() const {
  std::vector<std::string> out;
  for (const auto& l : impl_->listeners) out.push_back(l->address());
  return out;
}

std::vector<uint16_t> Server::bound_ports() const {
  std::vector<uint16_t> out;
  for (const auto& l : impl_->listeners) out.push_back(l->port());
  return out;
}

}  // namespace fleece::server
