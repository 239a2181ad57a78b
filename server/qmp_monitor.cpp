#include "server/qmp_monitor.hpp"

#include "server/qmp_framer.hpp"
#include "util/log.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <array>

namespace fleece::server {

namespace asio = boost::asio;

QmpMonitor::QmpMonitor(asio::local::stream_protocol::socket socket, const QmpCommandTable& table,
                       QmpVersion version, std::size_t max_request_bytes, uint64_t id)
    : socket_(std::move(socket)),
      dispatcher_(table),
      version_(std::move(version)),
      max_request_bytes_(max_request_bytes),
      id_(id),
      wake_writer_(socket_.get_executor()),
      flushed_(socket_.get_executor()) {}

void QmpMonitor::send(std::string message) {
  if (!open_) return;
  outbox_bytes_ += message.size();
  outbox_.push_back(std::move(message));
  if (outbox_bytes_ > kMaxOutboxBytes) {
    FLEECE_LOG_WARN("qmp", "monitor {} does not read its messages; closing it", id_);
    close();
    return;
  }
  wake_writer_.cancel();
}

void QmpMonitor::close() {
  if (!open_) return;
  open_ = false;
  boost::system::error_code ignored;
  socket_.shutdown(asio::socket_base::shutdown_both, ignored);
  socket_.close(ignored);
  wake_writer_.cancel();
  flushed_.cancel();
}

asio::awaitable<void> QmpMonitor::write_loop() {
  auto self = shared_from_this();
  while (open_) {
    if (outbox_.empty()) {
      flushed_.cancel();
      boost::system::error_code ec;
      wake_writer_.expires_at(asio::steady_timer::time_point::max());
      co_await wake_writer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    std::string message = std::move(outbox_.front());
    outbox_.pop_front();
    outbox_bytes_ -= message.size();
    writing_ = true;
    boost::system::error_code ec;
    co_await asio::async_write(socket_, asio::buffer(message),
                               asio::redirect_error(asio::use_awaitable, ec));
    writing_ = false;
    if (ec) {
      FLEECE_LOG_DEBUG("qmp", "monitor {}: write failed: {}", id_, ec.message());
      close();
    }
  }
  flushed_.cancel();
}

asio::awaitable<void> QmpMonitor::wait_flushed() {
  while (open_ && (!outbox_.empty() || writing_)) {
    boost::system::error_code ec;
    flushed_.expires_at(asio::steady_timer::time_point::max());
    co_await flushed_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<void> QmpMonitor::run() {
  auto self = shared_from_this();
  FLEECE_LOG_DEBUG("qmp", "monitor {} connected", id_);
  asio::co_spawn(socket_.get_executor(), write_loop(), asio::detached);
  send(qmp_serialize(qmp_greeting(version_)));

  QmpFramer framer(max_request_bytes_);
  std::vector<QmpFrame> frames;
  std::array<char, 64 * 1024> buffer;
  while (open_) {
    boost::system::error_code ec;
    const std::size_t n = co_await socket_.async_read_some(
        asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;
    frames.clear();
    framer.feed(std::string_view(buffer.data(), n), frames);
    for (QmpFrame& frame : frames) {
      if (!open_) break;
      if (!frame.value) {
        send(qmp_serialize(qmp_error(QmpError::generic(frame.error), nullptr)));
        continue;
      }
      QmpReply reply = co_await dispatcher_.dispatch(*frame.value);
      send(qmp_serialize(reply.message));
      if (reply.after_reply) {
        co_await wait_flushed();
        reply.after_reply();
      }
    }
  }
  close();
  FLEECE_LOG_DEBUG("qmp", "monitor {} disconnected", id_);
}

}  // namespace fleece::server
