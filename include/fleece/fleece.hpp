// fleece embedding API: an NBD export server inside a host process.
//
// A host (a VMM, a storage agent) creates an Engine, opens its disks through
// it, routes its guest's writes through the Disk handles, and exports the
// disks over NBD. What the host writes is what NBD clients read, because both
// go through the same device, with the same flush semantics.
//
//   fleece::EngineOptions options;
//   options.listen = {"unix:/run/vm1/nbd.sock"};
//   fleece::Engine engine(options);             // binds sockets; throws StartupError
//   fleece::Error error;
//   fleece::Disk disk = engine.open_disk({.name = "vda", .path = "/var/lib/vm1.img"}, &error);
//   if (!disk) { ... error.message ... }
//   engine.add_export({.name = "vda", .disk = "vda"});
//   engine.start();                             // threads + accept loops
//   disk.write(0, bytes);                       // the guest's write path
//   disk.flush();
//   ...
//   engine.stop();
//   engine.wait();
//
// Two ways to run
//  * Owned threads: Engine(options). start() starts options.threads I/O
//    threads; stop() begins a graceful shutdown; wait() blocks until it is
//    done and the threads are joined.
//  * The host's context: Engine(options, io). start() spawns the accept loops
//    on `io`; the host runs `io` itself (run(), poll(), one or many threads).
//    stop(on_stopped) begins the shutdown, which completes on `io`; then
//    on_stopped runs there. Once stopped, the engine leaves no work on `io`,
//    so a host that holds no work guard sees io.run() return. wait() may be
//    called from a thread that is not running `io`. The host's translation
//    units must be compiled with the Asio configuration fleece uses (the
//    fleece::embed CMake target passes it on). `io` must outlive the Engine.
//
// Shutdown is graceful: accepting stops, NBD clients finish their in-flight
// requests, writable disks are flushed, Unix socket files are removed.
// The destructor stops the engine if needed (owned threads: and joins).
//
// Errors
//  * Start-up failures (a busy socket path, a bad listen address) throw
//    StartupError from the constructor, with a one-line message saying what
//    was wrong and what to do; nothing is left behind.
//  * Run-time calls return an Error (std::error_code + one-line message).
//  * Disk I/O returns a std::error_code: std::errc values for errno cases
//    (invalid_argument for a range outside the disk or misaligned for
//    cache=none, operation_not_permitted for writes to a read-only disk,
//    resource_unavailable_try_again before start(), operation_canceled
//    once the engine is stopping or gone, resource_deadlock_would_occur for
//    a blocking call made on an engine thread).
//
// Threads: every member of Engine and Disk may be called from any thread,
// except that the blocking Disk calls must not be made from a thread the
// engine runs on (its own threads, or one running the host's context in
// the second mode): they would wait for work that thread has to do.
//
// Async completions run exactly once, on an engine thread (in the second
// mode: a thread running the host's context), except for requests refused
// before they start (not started, stopping, engine gone, disk closed, empty
// handle): those complete inline, inside the async_* call. Buffers passed
// to async calls must stay valid until the completion runs. A completion
// must not throw.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace fleece {

// Thrown by the Engine constructor. what() is one line for the user.
class StartupError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A run-time failure: what went wrong (code) and a one-line message naming
// the object and what to do. Converts to true when there is an error.
struct Error {
  std::error_code code;
  std::string message;
  explicit operator bool() const { return static_cast<bool>(code); }
};

enum class LogLevel { trace, debug, info, warn, error, off };

struct EngineOptions {
  // "unix:PATH", "tcp:HOST:PORT", "tcp:[V6ADDR]:PORT". At least one.
  std::vector<std::string> listen;
  // I/O threads in the owned-threads mode; 0: the CPU count, at most 4.
  // Ignored when running on the host's context.
  unsigned threads = 0;
  // fleece's log lines go to stderr; the level is process-wide.
  LogLevel log_level = LogLevel::warn;
  unsigned max_connections = 1000;
  std::chrono::milliseconds handshake_timeout{10'000};
};

enum class CacheMode {
  writeback,  // the page cache; flush() makes writes durable
  none,       // O_DIRECT: offsets and lengths must be multiples of 4096
};

struct DiskOptions {
  std::string name;  // unique within the engine
  std::string path;  // a raw image file or a block device; never created
  bool read_only = false;
  CacheMode cache = CacheMode::writeback;
};

struct ExportOptions {
  std::string name;         // what NBD clients ask for
  std::string disk;         // an open disk's name
  bool writable = false;    // refused for a read-only disk
  std::string description;  // shown by nbdinfo and friends
};

struct ExportInfo {
  std::string name;
  std::string disk;
  std::string description;
  bool writable = false;
  uint64_t size = 0;
  // Counters since the export was added (NBD requests only).
  uint64_t read_requests = 0, read_bytes = 0;
  uint64_t write_requests = 0, write_bytes = 0;
  uint64_t errors = 0;
};

struct ClientInfo {
  uint64_t id = 0;
  std::string export_name;
  std::string peer;  // "unix", "127.0.0.1:53422", "[::1]:53422"
  std::chrono::system_clock::time_point connected_at;
};

// A handle to an open disk: cheap to copy, valid until the disk is closed
// or the engine is gone (then every call fails with operation_canceled or
// no_such_device_or_address). A default-constructed Disk is empty.
//
// Requests are taken between Engine::start() and Engine::stop().
// Ranges are checked here: [offset, offset + length) must lie within size().
// Large requests are split to fit the device's limits; with cache=none an
// unaligned buffer is copied through an aligned one.
class Disk {
 public:
  using Completion = std::function<void(std::error_code)>;

  Disk();
  ~Disk();
  Disk(const Disk&);
  Disk& operator=(const Disk&);
  Disk(Disk&&) noexcept;
  Disk& operator=(Disk&&) noexcept;

  explicit operator bool() const { return impl_ != nullptr; }
  const std::string& name() const;
  uint64_t size() const;
  bool read_only() const;

  // Blocking calls: return when the device completed the request.
  std::error_code read(uint64_t offset, std::span<std::byte> out);
  // fua: durable before it returns (as NBD's FUA flag).
  std::error_code write(uint64_t offset, std::span<const std::byte> data, bool fua = false);
  // may_trim: the range may become a hole (NBD WRITE_ZEROES without NO_HOLE).
  std::error_code write_zeroes(uint64_t offset, uint64_t length, bool may_trim = false);
  // Discard: the range then reads as zeroes or as its old contents.
  std::error_code trim(uint64_t offset, uint64_t length);
  // Every write completed before the call is durable when it returns.
  std::error_code flush();

  // The same, completing through a callback (see the threads note above).
  void async_read(uint64_t offset, std::span<std::byte> out, Completion done);
  void async_write(uint64_t offset, std::span<const std::byte> data, Completion done,
                   bool fua = false);
  void async_write_zeroes(uint64_t offset, uint64_t length, Completion done, bool may_trim = false);
  void async_trim(uint64_t offset, uint64_t length, Completion done);
  void async_flush(Completion done);

  struct Impl;

 private:
  friend class Engine;
  explicit Disk(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

class Engine {
 public:
  // Owned threads. Throws StartupError.
  explicit Engine(EngineOptions options);
  // On the host's context (see the top of this file). Throws StartupError.
  Engine(EngineOptions options, boost::asio::io_context& io);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Starts serving. Call once; disks and exports may be added before or after.
  void start();
  // Begins the graceful shutdown; idempotent, returns at once. on_stopped
  // runs once the shutdown is complete: owned threads: on the thread that
  // calls wait() (or the destructor), after the threads are joined; host's
  // context: on `io`. If the engine has already finished, it runs at once.
  void stop(std::function<void()> on_stopped = {});
  // Blocks until the shutdown is complete (owned threads: returns at once
  // if the engine was neither started nor stopped). Afterwards Disk
  // requests fail with operation_canceled. Throws
  // std::logic_error when called from a thread the engine needs to finish.
  void wait();
  bool stopping() const;

  // Opens a disk (raw only). On failure: an empty Disk and *error set
  // (file_exists for a name in use, the errno of open(2) otherwise).
  Disk open_disk(const DiskOptions& options, Error* error = nullptr);
  // A handle to a disk opened before; empty if there is none of that name.
  Disk disk(std::string_view name) const;
  // Closes a disk: refused (device_or_resource_busy) while an export uses it.
  // Handles to it fail afterwards with no_such_device_or_address.
  Error close_disk(std::string_view name);

  Error add_export(const ExportOptions& options);
  // force: close the connected clients instead of refusing
  // (device_or_resource_busy) while there are some.
  Error remove_export(std::string_view name, bool force = false);

  std::vector<ExportInfo> exports() const;
  std::vector<ClientInfo> clients() const;
  // "unix:/run/x.sock", "tcp:[::]:10809": what the engine listens on.
  std::vector<std::string> listen_addresses() const;
  // TCP ports actually bound (useful with port 0); 0 for Unix sockets.
  std::vector<uint16_t> bound_ports() const;

  // Called after a client finished negotiation / after it is gone, on the
  // connection's thread. Set before start().
  void on_client_connected(std::function<void(const ClientInfo&)> hook);
  void on_client_disconnected(std::function<void(const ClientInfo&)> hook);

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace fleece
