// Exercises the embedding API's contract the way a host meets it: error
// codes and messages, the order of start/stop, blocking calls on an engine
// thread, handles outliving their disk or engine, cache=none with unaligned
// buffers, both ways to run. Prints "api_check: ok" and exits 0, or names
// the first broken promise and exits 1.
//
//   fleece_embed_api_check SCRATCH_DIR
#include <fleece/fleece.hpp>

#include <boost/asio/io_context.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <string>
#include <vector>

namespace {

std::string dir;
int checks = 0;

void check(bool ok, const char* what, const std::string& detail = {}) {
  ++checks;
  if (ok) return;
  std::fprintf(stderr, "api_check: FAILED: %s%s%s\n", what, detail.empty() ? "" : ": ", detail.c_str());
  std::exit(1);
}

void expect(std::error_code ec, std::errc want, const char* what) {
  check(ec == want, what, "got '" + ec.message() + "', want '" + std::make_error_code(want).message() + "'");
}

std::string make_file(const std::string& name, uint64_t size) {
  std::string path = dir + "/" + name;
  int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  check(fd >= 0 && ::ftruncate(fd, static_cast<off_t>(size)) == 0, "creating a scratch file", path);
  ::close(fd);
  return path;
}

std::vector<std::byte> bytes(size_t n, unsigned seed) {
  std::vector<std::byte> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = std::byte((i * 131 + seed * 7 + (i >> 12)) & 0xff);
  return out;
}

void start_up_errors() {
  bool threw = false;
  try {
    fleece::Engine engine({.listen = {"bogus:1"}});
  } catch (const fleece::StartupError& e) {
    threw = std::strlen(e.what()) > 0;
  }
  check(threw, "a bad listen address throws StartupError");

  threw = false;
  try {
    fleece::Engine engine({.listen = {}});
  } catch (const fleece::StartupError&) {
    threw = true;
  }
  check(threw, "no listen address throws StartupError");

  threw = false;
  try {
    fleece::Engine engine({.listen = {"unix:" + dir + "/no/such/dir/s"}});
  } catch (const fleece::StartupError&) {
    threw = true;
  }
  check(threw, "an unbindable socket path throws StartupError");
}

void owned_threads() {
  fleece::Engine engine({.listen = {"unix:" + dir + "/owned.sock"}});
  check(::access((dir + "/owned.sock").c_str(), F_OK) == 0, "the socket exists once the constructor returns");

  fleece::Error error;
  fleece::Disk missing = engine.open_disk({.name = "m", .path = dir + "/missing.img"}, &error);
  check(!missing && error.code == std::errc::no_such_file_or_directory && !error.message.empty(),
        "opening a missing file fails with ENOENT and a message", error.message);

  const uint64_t size = 4 << 20;
  fleece::Disk disk = engine.open_disk({.name = "d", .path = make_file("d.img", size)}, &error);
  check(static_cast<bool>(disk) && !error, "opening a disk", error.message);
  check(disk.size() == size && disk.name() == "d" && !disk.read_only(), "the handle describes the disk");
  check(!engine.open_disk({.name = "d", .path = dir + "/d.img"}, &error) && error.code == std::errc::file_exists,
        "a disk name is used once");

  auto data = bytes(100000, 1);
  expect(disk.write(0, data), std::errc::resource_unavailable_try_again, "a request before start()");

  engine.start();
  check(!disk.write(4097, data), "an unaligned write");
  std::vector<std::byte> back(data.size());
  check(!disk.read(4097, back) && back == data, "reading back what was written");
  expect(disk.write(size - 10, data), std::errc::invalid_argument, "a write past the end");
  expect(disk.read(size + 1, std::span(back).first(1)), std::errc::invalid_argument, "a read past the end");
  check(!disk.write_zeroes(4096, 8192) && !disk.read(4097, back), "write_zeroes");
  check(back[0] == std::byte(0) && back[8190] == std::byte(0) && back[8191] == data[8191], "zeroes land where asked");
  check(!disk.trim(1 << 20, 1 << 20) && !disk.flush(), "trim and flush");
  check(!disk.write(size - 1, std::span(data).first(1), true), "a FUA write of the last byte");

  // Blocking calls from an engine thread are refused, not deadlocked.
  std::promise<std::error_code> nested;
  disk.async_read(0, std::span(back).first(512), [&](std::error_code ec) {
    if (ec) return nested.set_value(ec);
    std::vector<std::byte> one(1);
    nested.set_value(disk.read(0, one));
  });
  expect(nested.get_future().get(), std::errc::resource_deadlock_would_occur, "a blocking call on an engine thread");

  // Async calls complete once, off the caller's stack.
  std::atomic<int> completions{0};
  std::promise<void> all_done;
  const int n = 64;
  std::vector<std::vector<std::byte>> buffers;
  for (int i = 0; i < n; ++i) buffers.push_back(bytes(4096, i));
  for (int i = 0; i < n; ++i) {
    disk.async_write(uint64_t(i) * 4096, buffers[i], [&](std::error_code ec) {
      check(!ec, "an async write", ec.message());
      if (++completions == n) all_done.set_value();
    });
  }
  all_done.get_future().get();
  for (int i = 0; i < n; ++i) {
    std::vector<std::byte> got(4096);
    check(!disk.read(uint64_t(i) * 4096, got) && got == buffers[i], "async writes land");
  }

  // Read-only disks and exports.
  fleece::Disk ro = engine.open_disk({.name = "ro", .path = make_file("ro.img", 1 << 20), .read_only = true}, &error);
  check(static_cast<bool>(ro) && ro.read_only(), "opening a read-only disk", error.message);
  expect(ro.write(0, std::span(data).first(10)), std::errc::operation_not_permitted, "writing a read-only disk");
  error = engine.add_export({.name = "ro", .disk = "ro", .writable = true});
  check(error.code == std::errc::invalid_argument && !error.message.empty(), "a writable export of a read-only disk is refused");
  check(!engine.add_export({.name = "ro", .disk = "ro"}), "a read-only export");
  check(!engine.add_export({.name = "d", .disk = "d", .writable = true, .description = "data"}), "a writable export");
  check(engine.add_export({.name = "d", .disk = "d"}).code == std::errc::file_exists, "an export name is used once");
  check(engine.add_export({.name = "x", .disk = "nope"}).code == std::errc::no_such_device_or_address,
        "an export of an unknown disk is refused");
  auto exports = engine.exports();
  check(exports.size() == 2 && exports[0].name == "d" && exports[0].writable && exports[0].size == size &&
            exports[0].description == "data" && exports[1].name == "ro" && !exports[1].writable,
        "exports() lists the exports");
  check(engine.clients().empty(), "no clients yet");
  check(engine.close_disk("d").code == std::errc::device_or_resource_busy, "an exported disk cannot be closed");
  check(!engine.remove_export("d") && !engine.close_disk("d"), "remove the export, then close the disk");
  expect(disk.read(0, std::span(back).first(1)), std::errc::no_such_device_or_address, "a handle to a closed disk");
  check(!engine.disk("d") && static_cast<bool>(engine.disk("ro")), "disk() finds open disks only");

  // stop(): requests are refused, on_stopped runs, the socket goes away.
  bool stopped = false;
  engine.stop([&] { stopped = true; });
  expect(ro.read(0, std::span(back).first(1)), std::errc::operation_canceled, "a request after stop()");
  engine.wait();
  check(stopped, "on_stopped ran by the end of wait()");
  check(::access((dir + "/owned.sock").c_str(), F_OK) != 0, "the socket file is removed");
  expect(ro.read(0, std::span(back).first(1)), std::errc::operation_canceled, "a request after wait()");
  std::promise<std::error_code> late;
  ro.async_flush([&](std::error_code ec) { late.set_value(ec); });
  expect(late.get_future().get(), std::errc::operation_canceled, "an async request after wait()");
}

void host_context() {
  boost::asio::io_context io;
  std::error_code write_ec, nested_ec, read_ec;
  bool stopped = false;
  std::vector<std::byte> data = bytes(3 << 20, 9), back(3 << 20);
  {
    fleece::Engine engine({.listen = {"unix:" + dir + "/hosted.sock", "tcp:127.0.0.1:0"}}, io);
    check(engine.bound_ports().size() == 2 && engine.bound_ports()[1] != 0, "bound_ports() reports the TCP port");
    fleece::Error error;
    fleece::Disk disk = engine.open_disk({.name = "h", .path = make_file("h.img", 8 << 20)}, &error);
    check(static_cast<bool>(disk), "opening a disk on the host's context", error.message);
    check(!engine.add_export({.name = "h", .disk = "h", .writable = true}), "exporting it");
    engine.start();
    disk.async_write(12345, data, [&](std::error_code ec) {
      write_ec = ec;
      std::vector<std::byte> one(1);
      nested_ec = disk.read(0, one);  // refused: this thread runs the context
      disk.async_read(12345, back, [&](std::error_code rec) {
        read_ec = rec;
        engine.stop([&] { stopped = true; });
      });
    });
    io.run();  // returns once the engine stopped: it leaves no work behind
  }
  check(!write_ec && !read_ec && back == data, "async write and read on the host's context");
  expect(nested_ec, std::errc::resource_deadlock_would_occur, "a blocking call on the host's context");
  check(stopped, "on_stopped ran on the host's context");
  check(::access((dir + "/hosted.sock").c_str(), F_OK) != 0, "the socket file is removed");

  // Destroyed without a stop(): the shutdown finishes when the host runs the context.
  boost::asio::io_context io2;
  {
    fleece::Engine engine({.listen = {"unix:" + dir + "/hosted2.sock"}}, io2);
    engine.start();
  }
  io2.run();
  check(::access((dir + "/hosted2.sock").c_str(), F_OK) != 0, "an engine destroyed without stop() cleans up");
}

void direct_io() {
  fleece::Engine engine({.listen = {"unix:" + dir + "/direct.sock"}});
  fleece::Error error;
  fleece::Disk disk = engine.open_disk(
      {.name = "o", .path = make_file("o.img", 1 << 20), .cache = fleece::CacheMode::none}, &error);
  if (!disk) {
    std::fprintf(stderr, "api_check: skipping cache=none (%s)\n", error.message.c_str());
    return;
  }
  engine.start();
  std::vector<std::byte> raw(8192 + 1);
  auto data = std::span(raw).subspan(1, 8192);  // deliberately misaligned
  auto src = bytes(8192, 3);
  std::copy(src.begin(), src.end(), data.begin());
  check(!disk.write(4096, data), "cache=none: a misaligned buffer goes through an aligned copy");
  std::vector<std::byte> raw_back(8192 + 3);
  auto back = std::span(raw_back).subspan(3, 8192);
  check(!disk.read(4096, back) && std::equal(back.begin(), back.end(), src.begin()), "cache=none: read back");
  expect(disk.write(100, data), std::errc::invalid_argument, "cache=none: a misaligned offset");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
    return 2;
  }
  dir = argv[1];
  start_up_errors();
  owned_threads();
  host_context();
  direct_io();
  std::printf("api_check: ok (%d checks)\n", checks);
  return 0;
}
