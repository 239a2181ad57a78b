// Server: the runtime, the disk and export tables, and the listeners.
//
// The object `fleece serve` runs and a host process embeds:
//
//   fleece::server::Server server(options);   // opens disks, binds sockets
//   server.set_events({...});                 // optional, before start()
//   server.start();                           // threads + accept loops
//   ... server.registry().add(...), server.stop() from any thread ...
//   server.wait();
//
// Construction does every start-up step that can fail: it opens each
// --disk, exports it, and binds every --listen address (or adopts the
// systemd-activated sockets). On failure it throws StartupError with a
// one-line message and leaves nothing behind (no socket files, no threads).
// Once the constructor returns, the listening sockets exist: a caller may
// announce readiness.
//
// Threads: N shards, each an io_context run by one thread; a connection
// lives on one shard for its whole life (round-robin). Shard 0 is also the
// control context: QMP, signals and timers of the server itself run there.
//
// stop() is graceful and bounded: accepting stops, negotiating clients get
// NBD_REP_ERR_SHUTDOWN, new requests get ESHUTDOWN, in-flight requests
// finish, connections close, writable devices are flushed, Unix socket files
// are removed. After kStopGrace, whatever is left is closed hard.
#pragma once

#include "server/disk_table.hpp"
#include "server/export_registry.hpp"
#include "server/options.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace fleece::server {

class JobTable;

struct ServerEvents {
  // Fired on the connection's shard thread, after the client finished
  // negotiation (connected) and after it is gone (disconnected).
  std::function<void(const ClientInfo&)> client_connected;
  std::function<void(const ClientInfo&)> client_disconnected;
};

class Server {
 public:
  static constexpr std::chrono::seconds kStopGrace{5};

  explicit Server(ServeOptions options);  // throws StartupError
  ~Server();                              // stop() + wait()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Starts the shard threads and the accept loops. Call once.
  void start();
  // Begins the graceful shutdown; thread-safe, idempotent, returns at once.
  void stop();
  // Blocks until the shutdown finished and every thread is joined.
  void wait();
  // start(), stop on SIGINT/SIGTERM (a second signal closes every
  // connection at once), wait(). on_started runs after start(), before
  // waiting: the place to announce readiness. Returns the exit code.
  int run(std::function<void()> on_started = {});
  bool stopping() const;

  ExportRegistry& registry();
  DiskTable& disks();
  JobTable& jobs();  // block jobs (QMP block-commit); stop() cancels them
  // Shard 0's context: QMP, timers, anything not tied to one connection.
  boost::asio::io_context& control_context();
  void set_events(ServerEvents events);

  const ServeOptions& options() const;
  // What the server listens on, for logs and QMP ("unix:/run/x.sock", "tcp:[::]:10809").
  std::vector<std::string> listen_addresses() const;
  // TCP ports actually bound (useful with port 0), in listener order; 0 for Unix.
  std::vector<uint16_t> bound_ports() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace fleece::server
