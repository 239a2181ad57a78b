#include "server/qmp_server.hpp"

#include "server/qmp_command_table.hpp"
#include "server/qmp_messages.hpp"
#include "server/qmp_monitor.hpp"
#include "util/log.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>

#include <fmt/format.h>

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <set>

namespace fleece::server {

namespace asio = boost::asio;
namespace json = boost::json;
using local = asio::local::stream_protocol;

struct QmpServer::Impl : std::enable_shared_from_this<QmpServer::Impl> {
  Impl(asio::io_context& io, std::shared_ptr<const QmpCommandTable> commands,
       QmpServerOptions options)
      : strand(asio::make_strand(io)),
        commands(std::move(commands)),
        options(std::move(options)),
        acceptor(strand) {}

  asio::strand<asio::io_context::executor_type> strand;
  std::shared_ptr<const QmpCommandTable> commands;
  QmpServerOptions options;
  local::acceptor acceptor;
  std::set<std::shared_ptr<QmpMonitor>> monitors;  // strand only
  std::atomic<std::size_t> monitor_count{0};
  std::atomic<bool> stopped{false};
  std::atomic<bool> listening{false};  // the socket file is ours to remove
  uint64_t next_monitor_id = 1;

  asio::awaitable<void> accept_loop();
  void close_all();
  void remove_socket_file();
};

asio::awaitable<void> QmpServer::Impl::accept_loop() {
  auto self = shared_from_this();
  while (acceptor.is_open()) {
    boost::system::error_code ec;
    local::socket socket(strand);
    co_await acceptor.async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) break;
      // Out of descriptors and the like: wait a little instead of spinning.
      FLEECE_LOG_WARN("qmp", "accept on {} failed: {}", options.socket_path, ec.message());
      asio::steady_timer pause(strand, std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    auto monitor = std::make_shared<QmpMonitor>(std::move(socket), *commands, fleece_qmp_version(),
                                                options.max_request_bytes, next_monitor_id++);
    monitors.insert(monitor);
    monitor_count = monitors.size();
    asio::co_spawn(
        strand,
        [self, monitor]() -> asio::awaitable<void> {
          co_await monitor->run();
          self->monitors.erase(monitor);
          self->monitor_count = self->monitors.size();
        },
        asio::detached);
  }
}

void QmpServer::Impl::close_all() {
  boost::system::error_code ignored;
  acceptor.close(ignored);
  for (const auto& monitor : monitors) monitor->close();
  remove_socket_file();
}

void QmpServer::Impl::remove_socket_file() {
  if (!listening.exchange(false)) return;
  ::unlink(options.socket_path.c_str());
}

QmpServer::QmpServer(asio::io_context& io, std::shared_ptr<const QmpCommandTable> commands,
                     QmpServerOptions options)
    : impl_(std::make_shared<Impl>(io, std::move(commands), std::move(options))) {}

QmpServer::~QmpServer() { stop(); }

std::error_code QmpServer::start(std::string* message) {
  auto say = [&](std::string text) {
    if (message) *message = std::move(text);
  };
  const std::string& path = impl_->options.socket_path;
  boost::system::error_code ec;
  // A socket file nobody answers on is left over from a crash: replace it.
  // One somebody answers on belongs to a live server: refuse.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    asio::io_context probe_io;
    local::socket probe(probe_io);
    probe.connect(local::endpoint(path), ec);
    if (!ec) {
      say(fmt::format("QMP socket {} is in use by another server; stop it or choose another --qmp path",
                      path));
      return std::make_error_code(std::errc::address_in_use);
    }
    ::unlink(path.c_str());
  }
  local::acceptor& acceptor = impl_->acceptor;
  acceptor.open(local(), ec);
  if (!ec) acceptor.bind(local::endpoint(path), ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    boost::system::error_code ignored;
    acceptor.close(ignored);
    say(fmt::format("cannot listen for QMP on {}: {} (check the directory exists and is writable)",
                    path, ec.message()));
    return ec;
  }
  impl_->listening = true;
  FLEECE_LOG_INFO("qmp", "QMP listening on unix:{}", path);
  asio::co_spawn(impl_->strand, impl_->accept_loop(), asio::detached);
  return {};
}

void QmpServer::stop() {
  if (impl_->stopped.exchange(true)) return;
  // The socket file goes now, whether or not the loop still runs.
  impl_->remove_socket_file();
  asio::post(impl_->strand, [impl = impl_] { impl->close_all(); });
}

void QmpServer::emit_event(std::string_view name, std::string_view data_json) {
  json::value data = json::object();
  if (!data_json.empty()) {
    boost::system::error_code ec;
    data = json::parse(data_json, ec);
    if (ec || !data.is_object()) {
      FLEECE_LOG_ERROR("qmp", "event {} dropped: data is not a JSON object: {}", name, data_json);
      return;
    }
  }
  std::string message = qmp_serialize(qmp_event(name, std::move(data), qmp_now()));
  asio::post(impl_->strand, [impl = impl_, message = std::move(message)] {
    for (const auto& monitor : impl->monitors) {
      if (monitor->negotiated()) monitor->send(message);
    }
  });
}

std::size_t QmpServer::monitor_count() const { return impl_->monitor_count.load(); }

const std::string& QmpServer::socket_path() const { return impl_->options.socket_path; }

}  // namespace fleece::server
