// QmpMonitor: one client of the QMP socket, from greeting to hang-up.
//
// Contract
//  * run() sends the greeting, then reads requests (QmpFramer), answers each
//    in order (QmpDispatcher) and returns when the peer hangs up, a write
//    fails, or close() is called. Bad input gets a QMP error, never a crash
//    or a closed server.
//  * One command runs at a time per monitor, as in QEMU; events keep flowing
//    while a command awaits, because every message goes through an outbox
//    drained by its own writer coroutine.
//  * All members run on the QMP strand (the executor of the socket).
//  * A monitor that stops reading is dropped once kMaxOutboxBytes pile up:
//    a stuck client costs bounded memory.
#pragma once

#include "server/qmp_dispatcher.hpp"
#include "server/qmp_messages.hpp"

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cstddef>
#include <deque>
#include <memory>
#include <string>

namespace fleece::server {

class QmpMonitor : public std::enable_shared_from_this<QmpMonitor> {
 public:
  static constexpr std::size_t kMaxOutboxBytes = 16u << 20;

  QmpMonitor(boost::asio::local::stream_protocol::socket socket, const QmpCommandTable& table,
             QmpVersion version, std::size_t max_request_bytes, uint64_t id);

  boost::asio::awaitable<void> run();

  // Queues one serialised message ("...\r\n").
  void send(std::string message);
  void close();

  bool negotiated() const { return dispatcher_.negotiated(); }
  bool is_open() const { return open_; }
  uint64_t id() const { return id_; }

 private:
  boost::asio::awaitable<void> write_loop();
  boost::asio::awaitable<void> wait_flushed();

  boost::asio::local::stream_protocol::socket socket_;
  QmpDispatcher dispatcher_;
  QmpVersion version_;
  std::size_t max_request_bytes_;
  uint64_t id_;
  bool open_ = true;
  bool writing_ = false;
  std::deque<std::string> outbox_;
  std::size_t outbox_bytes_ = 0;
  boost::asio::steady_timer wake_writer_;
  boost::asio::steady_timer flushed_;
};

}  // namespace fleece::server
