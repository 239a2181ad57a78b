// A toy VMM embedding fleece.
//
//   fleece_example_host [--io-context] [--dump PATH] SOCKET IMAGE
//
// Opens IMAGE (a raw file, never created) as disk "vda", exports it writable
// over NBD on the Unix socket SOCKET, then plays the guest: writes a known
// pattern over the whole disk in-process, flushes, and prints "host: ready".
// Block i (4096 bytes) is the line "block %08x fleece\n" (i in hex) repeated
// and cut at 4096 bytes.
//
// Then it serves until SIGTERM or SIGINT ("host: stopped", exit 0). SIGUSR1
// reads the whole disk in-process, as the guest sees it, writes it to the
// dump file (default IMAGE.dump) and prints "host: dumped": what NBD clients
// wrote is what the guest reads.
//
// Without --io-context fleece runs its own threads and the host uses the
// blocking calls from its main thread. With --io-context the host runs one
// boost::asio::io_context on its main thread, fleece runs on it too, and the
// host uses the async calls.
#include <fleece/fleece.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr uint64_t kBlock = 4096;
constexpr uint64_t kChunk = 1u << 20;  // bytes per write request

// The guest's data: bytes [offset, offset + out.size()) of the pattern.
void fill_pattern(uint64_t offset, std::span<std::byte> out) {
  for (size_t done = 0; done < out.size();) {
    uint64_t pos = offset + done;
    uint64_t block = pos / kBlock;
    char line[32];
    int n = std::snprintf(line, sizeof line, "block %08llx fleece\n", static_cast<unsigned long long>(block));
    size_t in_block = std::min<uint64_t>(kBlock - pos % kBlock, out.size() - done);
    for (size_t k = 0; k < in_block; ++k) out[done + k] = std::byte(line[(pos % kBlock + k) % n]);
    done += in_block;
  }
}

void say(const char* line) {
  std::printf("host: %s\n", line);
  std::fflush(stdout);
}

bool write_file(const std::string& path, const std::vector<std::byte>& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  return static_cast<bool>(out);
}

struct Args {
  bool io_context = false;
  std::string dump, socket, image;
};

bool parse(int argc, char** argv, Args& args) {
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--io-context") args.io_context = true;
    else if (a == "--dump" && i + 1 < argc) args.dump = argv[++i];
    else positional.push_back(a);
  }
  if (positional.size() != 2) return false;
  args.socket = positional[0];
  args.image = positional[1];
  if (args.dump.empty()) args.dump = args.image + ".dump";
  return true;
}

// Both modes: disk "vda", exported writable.
fleece::Disk open_and_export(fleece::Engine& engine, const Args& args) {
  fleece::Error error;
  fleece::Disk disk = engine.open_disk({.name = "vda", .path = args.image}, &error);
  if (!disk) throw fleece::StartupError(error.message);
  if (auto e = engine.add_export({.name = "vda", .disk = "vda", .writable = true,
                                  .description = "toy VMM disk"})) {
    throw fleece::StartupError(e.message);
  }
  return disk;
}

// --- owned threads, blocking calls -----------------------------------------

int run_with_threads(const Args& args) {
  // Signals go to sigwait() below: block them before fleece starts threads,
  // which inherit the mask.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGINT, SIGTERM, SIGUSR1}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  fleece::Engine engine({.listen = {"unix:" + args.socket}});
  fleece::Disk disk = open_and_export(engine, args);
  engine.start();

  std::vector<std::byte> chunk(kChunk);
  for (uint64_t off = 0; off < disk.size(); off += kChunk) {
    auto piece = std::span(chunk).first(std::min(kChunk, disk.size() - off));
    fill_pattern(off, piece);
    if (auto ec = disk.write(off, piece)) throw fleece::StartupError("writing the pattern: " + ec.message());
  }
  if (auto ec = disk.flush()) throw fleece::StartupError("flushing: " + ec.message());
  say("ready");

  for (;;) {
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig == SIGUSR1) {
      std::vector<std::byte> all(disk.size());
      auto ec = disk.read(0, all);
      if (ec || !write_file(args.dump, all)) {
        std::fprintf(stderr, "host: dump failed: %s\n", ec ? ec.message().c_str() : "cannot write the file");
      }
      say("dumped");
      continue;
    }
    engine.stop();
    engine.wait();
    say("stopped");
    return 0;
  }
}

// --- the host's io_context, async calls ------------------------------------

int run_on_io_context(const Args& args) {
  boost::asio::io_context io;
  fleece::Engine engine({.listen = {"unix:" + args.socket}}, io);
  fleece::Disk disk = open_and_export(engine, args);
  engine.start();

  // The guest writes every chunk at once; each buffer lives until its write completes.
  auto pending = std::make_shared<uint64_t>((disk.size() + kChunk - 1) / kChunk);
  auto failed = std::make_shared<std::error_code>();
  auto after_writes = [disk, failed]() mutable {
    if (*failed) {
      std::fprintf(stderr, "host: writing the pattern: %s\n", failed->message().c_str());
      std::exit(1);
    }
    disk.async_flush([](std::error_code ec) {
      if (ec) {
        std::fprintf(stderr, "host: flushing: %s\n", ec.message().c_str());
        std::exit(1);
      }
      say("ready");
    });
  };
  if (*pending == 0) after_writes();
  for (uint64_t off = 0; off < disk.size(); off += kChunk) {
    auto buffer = std::make_shared<std::vector<std::byte>>(std::min(kChunk, disk.size() - off));
    fill_pattern(off, *buffer);
    disk.async_write(off, *buffer, [buffer, pending, failed, after_writes](std::error_code ec) mutable {
      if (ec && !*failed) *failed = ec;
      if (--*pending == 0) after_writes();
    });
  }

  boost::asio::signal_set signals(io, SIGINT, SIGTERM, SIGUSR1);
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        if (sig != SIGUSR1) {
          // No more waiting for signals: once fleece has stopped, io.run() returns.
          engine.stop([&] {
            signals.cancel();
            say("stopped");
          });
          return;
        }
        auto all = std::make_shared<std::vector<std::byte>>(disk.size());
        disk.async_read(0, *all, [all, &args](std::error_code rec) {
          if (rec || !write_file(args.dump, *all)) {
            std::fprintf(stderr, "host: dump failed: %s\n", rec ? rec.message().c_str() : "cannot write the file");
          }
          say("dumped");
        });
        signals.async_wait(on_signal);
      };
  signals.async_wait(on_signal);
  io.run();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  Args args;
  if (!parse(argc, argv, args)) {
    std::fprintf(stderr, "usage: %s [--io-context] [--dump PATH] SOCKET IMAGE\n", argv[0]);
    return 2;
  }
  try {
    return args.io_context ? run_on_io_context(args) : run_with_threads(args);
  } catch (const fleece::StartupError& e) {
    std::fprintf(stderr, "host: %s\n", e.what());
    return 1;
  }
}
