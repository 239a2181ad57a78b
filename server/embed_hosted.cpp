#include "server/embed_core.hpp"

#include "server/connection.hpp"
#include "server/disk_bitmaps.hpp"
#include "server/listener.hpp"
#include "server/server.hpp"
#include "util/log.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <set>
#include <stdexcept>

namespace fleece::server {

namespace asio = boost::asio;
using boost::system::error_code;

HostedServer::HostedServer(asio::io_context& io, ServeOptions options)
    : io_(io), options_(std::move(options)) {
  // No socket activation here: LISTEN_FDS belongs to the host process.
  for (const auto& address : options_.listen) listeners_.push_back(Listener::bind(io_, address));
  if (listeners_.empty()) throw StartupError("nothing to listen on; give a listen address (unix:PATH or tcp:HOST:PORT)");
  for (const auto& l : listeners_) FLEECE_LOG_INFO("embed", "listening on {}", l->address());
}

HostedServer::~HostedServer() = default;

void HostedServer::start() {
  if (started_) return;
  started_ = true;
  for (auto& listener : listeners_) {
    asio::co_spawn(io_, accept_loop(shared_from_this(), listener.get()), asio::detached);
  }
}

void HostedServer::stop(std::function<void()> on_stopped) {
  {
    std::lock_guard lock(mutex_);
    if (finished_) {
      if (on_stopped) asio::post(io_, std::move(on_stopped));
      return;
    }
    if (on_stopped) on_stopped_.push_back(std::move(on_stopped));
  }
  bool expected = false;
  if (!stopping_.compare_exchange_strong(expected, true)) return;
  asio::co_spawn(io_, shutdown(shared_from_this()), asio::detached);
}

void HostedServer::wait() {
  if (io_.get_executor().running_in_this_thread()) {
    throw std::logic_error("fleece::Engine::wait() called on a thread running the engine's io_context");
  }
  std::unique_lock lock(mutex_);
  finished_cv_.wait(lock, [&] { return finished_; });
}

asio::awaitable<void> HostedServer::accept_loop(std::shared_ptr<HostedServer> self, Listener* listener) {
  asio::steady_timer backoff(io_);
  for (;;) {
    Socket socket(io_);
    error_code ec;
    co_await listener->acceptor().async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_.load()) break;
    if (ec) {
      if (ec == asio::error::operation_aborted || !listener->acceptor().is_open()) break;
      // Out of fds or a transient network error: wait a little, do not spin.
      FLEECE_LOG_WARN("embed", "{}: accept failed: {}", listener->address(), ec.message());
      backoff.expires_after(std::chrono::milliseconds(100));
      co_await backoff.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (live_.load() >= options_.max_connections) {
      FLEECE_LOG_WARN("embed", "{}: connection limit ({}) reached, refusing {}", listener->address(),
                      options_.max_connections, peer_name(socket.native_handle()));
      socket.close(ec);
      continue;
    }
    if (is_tcp(socket.native_handle())) {
      int one = 1;
      ::setsockopt(socket.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    ConnectionSettings settings;
    settings.registry = &registry_;
    settings.stopping = &stopping_;
    settings.handshake_timeout = options_.handshake_timeout;
    std::lock_guard lock(mutex_);
    uint64_t id = next_connection_++;
    live_.fetch_add(1);
    // The connection keeps the server alive: its registry and flags are ours.
    auto handle = start_connection(std::move(socket), settings, [self, id] {
      std::lock_guard lock(self->mutex_);
      self->connections_.erase(id);
      self->live_.fetch_sub(1);
    });
    connections_.emplace(id, handle);
  }
}

void HostedServer::close_all() {
  std::vector<std::shared_ptr<ConnectionHandle>> handles;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, weak] : connections_) {
      if (auto h = weak.lock()) handles.push_back(std::move(h));
    }
  }
  for (auto& h : handles) h->abort();
}

asio::awaitable<void> HostedServer::shutdown(std::shared_ptr<HostedServer> self) {
  (void)self;  // held only to keep the server alive until the shutdown completes
  FLEECE_LOG_INFO("embed", "shutting down");
  for (auto& listener : listeners_) listener->close();
  std::vector<std::shared_ptr<ConnectionHandle>> handles;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, weak] : connections_) {
      if (auto h = weak.lock()) handles.push_back(std::move(h));
    }
  }
  for (auto& h : handles) h->request_stop();
  handles.clear();

  asio::steady_timer tick(io_);
  error_code ec;
  auto deadline = std::chrono::steady_clock::now() + Server::kStopGrace;
  while (live_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    tick.expires_after(std::chrono::milliseconds(10));
    co_await tick.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (live_.load() > 0) {
    FLEECE_LOG_WARN("embed", "{} connection(s) still open after {} s, closing them", live_.load(),
                    Server::kStopGrace.count());
    close_all();
    deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (live_.load() > 0 && std::chrono::steady_clock::now() < deadline) {
      tick.expires_after(std::chrono::milliseconds(10));
      co_await tick.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  // Flush every writable device once: acknowledged writes reach the disk.
  std::set<block::Device*> flushed;
  auto flush = [&](const std::shared_ptr<block::Device>& device, const std::string& name)
      -> asio::awaitable<void> {
    if (!device || device->capabilities().read_only || !flushed.insert(device.get()).second) co_return;
    std::error_code fec = co_await device->flush();
    if (fec) FLEECE_LOG_ERROR("embed", "flushing {} failed: {}", name, fec.message());
  };
  for (const auto& disk : disks_.list()) {
    if (!disk.spec.read_only) co_await flush(disk.device, disk.name);
  }
  for (const auto& e : registry_.exports()) {
    if (e->writable()) co_await flush(e->device(), e->name());
  }
  co_await persist_disk_bitmaps(disks_);  // nothing writes any more: in_use cleared
  FLEECE_LOG_INFO("embed", "stopped");

  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard lock(mutex_);
    finished_ = true;
    callbacks.swap(on_stopped_);
  }
  finished_cv_.notify_all();
  for (auto& callback : callbacks) callback();
}

std::vector<std::string> HostedServer::listen_addresses() const {
  std::vector<std::string> out;
  for (const auto& l : listeners_) out.push_back(l->address());
  return out;
}

std::vector<uint16_t> HostedServer::bound_ports() const {
  std::vector<uint16_t> out;
  for (const auto& l : listeners_) out.push_back(l->port());
  return out;
}

}  // namespace fleece::server
