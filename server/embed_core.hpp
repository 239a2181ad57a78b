// Internals behind include/fleece/fleece.hpp (the embedding API).
//
// EmbedCore is what an Engine and every Disk handle share: where disk work
// runs and which tables to look disks up in. The Engine clears it when it
// finishes, so handles that outlive the engine fail cleanly instead of
// touching a destroyed io_context.
//
// Engine::Impl is the Engine's state (embed.cpp: lifecycle, disks,
// exports; embed_fleece.cpp: fleeces and bitmaps).
//
// HostedServer is the server for the second way to run an Engine: on the
// host's io_context. It is the same assembly as server::Server (listeners,
// one coroutine per connection, the export registry, the disk table, the
// same graceful shutdown) minus the threads: every coroutine holds a
// shared_ptr to it, so it lives until its last piece of work on the host's
// context has finished, whenever the Engine object itself goes away.
#pragma once

#include "fleece/fleece.hpp"
#include "server/disk_table.hpp"
#include "server/export_registry.hpp"
#include "server/options.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

namespace fleece::server {

class Listener;
class ConnectionHandle;
class FleeceTable;
class QmpCommandTable;
class Server;

struct EmbedCore {
  // Held shared while submitting work, exclusively while clearing.
  mutable std::shared_mutex mutex;
  boost::asio::io_context* io = nullptr;  // where Disk requests run
  DiskTable* disks = nullptr;
  ExportRegistry* registry = nullptr;
  bool accepting = false;  // between start() and stop(): Disk requests are taken
  bool stopped = false;    // stop() was called (refusals say operation_canceled)
};

class HostedServer : public std::enable_shared_from_this<HostedServer> {
 public:
  // Binds every listen address on io; throws StartupError.
  HostedServer(boost::asio::io_context& io, ServeOptions options);
  ~HostedServer();

  void start();  // spawns the accept loops on io
  // Spawns the shutdown on io; on_stopped runs there once it is complete
  // (at once, posted, if it already is).
  void stop(std::function<void()> on_stopped);
  void wait();  // blocks until the shutdown is complete
  bool stopping() const { return stopping_.load(); }

  ExportRegistry& registry() { return registry_; }
  DiskTable& disks() { return disks_; }
  boost::asio::io_context& io() { return io_; }
  std::vector<std::string> listen_addresses() const;
  std::vector<uint16_t> bound_ports() const;

 private:
  boost::asio::awaitable<void> accept_loop(std::shared_ptr<HostedServer> self, Listener* listener);
  boost::asio::awaitable<void> shutdown(std::shared_ptr<HostedServer> self);
  void close_all();

  boost::asio::io_context& io_;
  ServeOptions options_;
  ExportRegistry registry_;
  DiskTable disks_;
  std::vector<std::unique_ptr<Listener>> listeners_;

  std::atomic<bool> stopping_{false};
  bool started_ = false;

  std::mutex mutex_;  // guards everything below
  std::map<uint64_t, std::weak_ptr<ConnectionHandle>> connections_;
  uint64_t next_connection_ = 1;
  std::atomic<size_t> live_{0};
  bool finished_ = false;
  std::vector<std::function<void()>> on_stopped_;
  std::condition_variable finished_cv_;
};

}  // namespace fleece::server

namespace fleece {

struct Engine::Impl {
  std::shared_ptr<server::EmbedCore> core = std::make_shared<server::EmbedCore>();
  std::unique_ptr<server::Server> server;          // owned threads
  std::shared_ptr<server::HostedServer> hosted;    // the host's context
  boost::asio::io_context* control = nullptr;      // where a blocking wait() would deadlock; dead once finished

  std::vector<std::string> addresses;  // kept: they outlive the server
  std::vector<uint16_t> ports;

  std::atomic<bool> stopping{false};
  std::mutex mutex;  // guards everything below
  bool started = false;
  bool finished = false;  // owned threads: torn down
  std::vector<std::function<void()>> on_stopped;
  std::function<void(const ClientInfo&)> connected, disconnected;
  std::mutex wait_mutex;  // one waiter joins the threads; the others wait for it

  // Fleeces and bitmaps go through the QMP command handlers (the same code
  // as `fleece serve`), one command at a time like one QMP monitor. Guarded
  // by core->mutex like the tables they point into; set up by
  // make_control(), dropped (stores deleted) by drop_control() before the
  // tables go away.
  std::unique_ptr<server::FleeceTable> fleeces;
  std::shared_ptr<server::QmpCommandTable> commands;
  std::mutex command_mutex;
  struct BrokenHook {
    std::mutex mutex;
    std::function<void(const FleeceBroken&)> hook;
  };
  std::shared_ptr<BrokenHook> broken = std::make_shared<BrokenHook>();

  void install_hooks();
  void teardown();
  void make_control(const std::string& store_dir);  // after core is set
  void drop_control();                              // under core->mutex held exclusively
  // The stores a killed process left beside a newly opened disk.
  void sweep_stale_stores(std::string_view disk);
};

// A handle's shared state (Disk's constructor from it is for Engine only).
std::shared_ptr<Disk::Impl> make_disk_impl(std::shared_ptr<server::EmbedCore> core, std::string name,
                                           uint64_t size, bool read_only);

}  // namespace fleece
