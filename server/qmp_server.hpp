// QmpServer: the QMP control socket (`--qmp unix:PATH`).
//
//   auto table = make_qmp_command_table(...);        // qmp_commands.hpp
//   QmpServer qmp(io, table, {.socket_path = "./fleece.qmp"});
//   if (auto ec = qmp.start()) ...                   // socket exists now
//   qmp.emit_event("NBD_CLIENT_CONNECTED", R"({"export":"d0","client":"unix"})");
//   qmp.stop();
//
// Contract
//  * Any number of monitors at once; each gets the greeting, negotiates, and
//    is served by a QmpMonitor. A monitor that misbehaves or disconnects
//    (even mid-command) affects nobody else.
//  * Everything runs on one strand of `io` (the server's control context),
//    so command handlers never race each other.
//  * emit_event() and stop() are thread-safe. Events go to every negotiated
//    monitor, stamped with the wall-clock time of the call.
//  * start() refuses a socket path another live server answers on
//    (errc::address_in_use); a stale socket file is replaced. stop() closes
//    the listener and every monitor and removes the socket file; the
//    destructor does the same.
//
// Boost.Asio and Boost.JSON stay behind the pimpl: this header is what the
// rest of the server includes.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

namespace boost::asio {
class io_context;
}

namespace fleece::server {

class QmpCommandTable;

struct QmpServerOptions {
  std::string socket_path = "./fleece.qmp";
  std::size_t max_request_bytes = 1u << 20;
};

class QmpServer {
 public:
  QmpServer(boost::asio::io_context& io, std::shared_ptr<const QmpCommandTable> commands,
            QmpServerOptions options);
  ~QmpServer();
  QmpServer(const QmpServer&) = delete;
  QmpServer& operator=(const QmpServer&) = delete;

  // Binds and listens, then accepts monitors on `io`. On failure, `message`
  // (if given) gets one line naming the path and what to do.
  std::error_code start(std::string* message = nullptr);
  void stop();

  // data_json: the event's "data" as JSON object text; empty means {}.
  void emit_event(std::string_view name, std::string_view data_json = {});

  std::size_t monitor_count() const;  // connected monitors, negotiated or not
  const std::string& socket_path() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace fleece::server
