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
  // Where fleece stores (throwaway qcow2s) go; "": beside each disk.
  std::string store_dir;
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
  uint64_t read_bytes = 0;  // of this client's READ requests that succeeded so far
};

// ---- Fleecing and dirty bitmaps ---------------------------------------
// The operations of QMP fleece-start, fleece-stop, query-fleeces and
// block-dirty-bitmap-* (README), with the same checks and messages.

enum class OnCbwError {
  break_snapshot,     // the guest write wins; the fleece breaks (its readers get EIO)
  break_guest_write,  // the guest write fails; the fleece stays exact
};

struct BitmapRef {
  std::string disk;
  std::string name;
};

struct FleeceOptions {
  std::string id;                  // a letter, then letters, digits, '-', '.', '_'
  std::vector<std::string> disks;  // open disks, frozen at one point in time
  // Enabled bitmaps of those disks, frozen at the same instant: each goes on
  // recording from empty, its frozen half is listed as NAME@ID and offered as
  // qemu:dirty-bitmap:NAME on the DISK@ID export.
  std::vector<BitmapRef> bitmaps;
  OnCbwError on_cbw_error = OnCbwError::break_snapshot;
  std::chrono::milliseconds cbw_timeout{0};  // 0: none
  uint64_t max_store_bytes = 0;              // 0: unlimited
  uint32_t cluster_size = 0;                 // the stores' qcow2 clusters; 0: 64 KiB
  // The copy unit (the NBD QMP's 'granularity'); 0: the disk's current one,
  // else 4 KiB (subclusters of the qcow2 clusters).
  uint32_t granularity = 0;
};

struct FleeceDiskInfo {
  std::string disk;
  std::string export_name;  // "DISK@ID", read-only (TRIM: done with those blocks)
  std::string store;        // the throwaway qcow2's path
  uint32_t cluster_size = 0;  // its qcow2 clusters
  uint32_t granularity = 0;   // the copy unit
  uint64_t preserved_bytes = 0;  // copied aside before a write
  uint64_t preserved_clusters = 0, zero_clusters = 0, freed_clusters = 0;
  uint64_t store_bytes = 0;
  uint64_t read_bytes = 0;          // by every client of the export
  std::vector<ClientInfo> clients;  // each with its own read_bytes
  bool broken = false;
  std::string broken_reason;
};

struct FleeceInfo {
  std::string id;
  std::vector<FleeceDiskInfo> disks;        // in FleeceOptions::disks order
  std::chrono::microseconds write_pause{0};  // how long writes waited at the start
  OnCbwError on_cbw_error = OnCbwError::break_snapshot;
  std::chrono::milliseconds cbw_timeout{0};
  uint64_t max_store_bytes = 0;
};

struct FleeceBroken {
  std::string id;
  std::string disk;
  std::string reason;
};

struct BitmapOptions {
  std::string disk;
  std::string name;
  uint64_t granularity = 65536;  // a power of two, at least 512
  bool persistent = false;       // kept in the disk's sidecar (raw) across restarts
  bool disabled = false;         // records nothing until enabled
};

struct BitmapInfo {
  std::string name;  // NAME, or NAME@ID: the frozen half a fleece left
  uint64_t granularity = 0;
  uint64_t dirty_bytes = 0;
  bool recording = false;
  bool persistent = false;
  bool busy = false;          // offered over NBD
  bool inconsistent = false;  // in use at a crash: never trusted, remove only
  bool frozen = false;
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

  // Fleecing and dirty bitmaps. The calls that change something block until
  // done, between start() and stop() (else resource_unavailable_try_again /
  // operation_canceled), not on an engine thread
  // (resource_deadlock_would_occur). A refusal is invalid_argument (or
  // no_such_device_or_address for an unknown disk) with the reason in the
  // message. The queries may be called at any time.
  //
  // start_fleece: writes to the disks pause while the point in time is
  // taken, then each disk is exported read-only as DISK@ID. On failure:
  // nothing was started, an empty FleeceInfo and *error set.
  FleeceInfo start_fleece(const FleeceOptions& options, Error* error = nullptr);
  // Removes the exports (their clients are closed) and deletes the stores.
  // Fleeces still open when the engine finishes have their stores deleted.
  Error stop_fleece(std::string_view id);
  std::vector<FleeceInfo> fleeces() const;  // in id order
  // Called on an engine thread when a fleece breaks (its readers get EIO).
  void on_fleece_broken(std::function<void(const FleeceBroken&)> hook);

  Error add_bitmap(const BitmapOptions& options);
  // Also from the disk's sidecar if persistent; NAME@ID halves too.
  Error remove_bitmap(std::string_view disk, std::string_view name);
  Error clear_bitmap(std::string_view disk, std::string_view name);
  Error enable_bitmap(std::string_view disk, std::string_view name);
  Error disable_bitmap(std::string_view disk, std::string_view name);
  // target |= every source (e.g. a fleece's NAME@ID after a failed backup).
  Error merge_bitmaps(std::string_view disk, std::string_view target, const std::vector<BitmapRef>& sources);
  // Live bitmaps in creation order, then frozen ones by name; empty for an unknown disk.
  std::vector<BitmapInfo> bitmaps(std::string_view disk) const;
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
