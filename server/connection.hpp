// One NBD client connection: negotiation, then transmission.
//
// start_connection() takes an accepted socket and runs the connection as a
// coroutine on the socket's executor (its shard). The negotiation and
// transmission loops are templates over the stream type (a plain socket
// now, a TLS stream after STARTTLS later), instantiated in connection.cpp.
//
// Transmission in short: a reader decodes requests from a buffered stream
// and starts each as its own coroutine against the Device; replies are
// queued as they complete (out of order) and one writer sends every queued
// reply in a single gathered write. READ data is read straight into the
// buffer the reply is sent from. In-flight payload bytes are bounded by a
// per-connection budget instead of a request count.
#pragma once

#include "nbd/negotiation.hpp"
#include "server/export_registry.hpp"
#include "server/listener.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace fleece::tls {
class ServerContext;
}

namespace fleece::server {

struct ConnectionSettings {
  ExportRegistry* registry = nullptr;
  const std::atomic<bool>* stopping = nullptr;  // the server is shutting down
  std::chrono::milliseconds handshake_timeout{10'000};
  uint64_t inflight_budget = 64u << 20;  // bytes of READ/WRITE payload in flight
  nbd::TlsMode tls_mode = nbd::TlsMode::off;
  tls::ServerContext* tls = nullptr;     // credentials for STARTTLS (set unless tls_mode is off)
};

// What the server keeps of a live connection. Thread-safe.
class ConnectionHandle {
 public:
  virtual ~ConnectionHandle() = default;
  // Graceful: finish in-flight requests, answer new ones ESHUTDOWN, close.
  virtual void request_stop() = 0;
  // Hard: close the socket now (export removed, stop grace expired).
  virtual void abort() = 0;
  virtual const std::string& peer() const = 0;
};

// on_finished runs once, on the connection's executor, after it closed.
std::shared_ptr<ConnectionHandle> start_connection(Socket socket, ConnectionSettings settings,
                                                   std::function<void()> on_finished);

}  // namespace fleece::server
