// Command-line options of `fleece serve`, parsed and checked.
//
// parse_serve_options() turns argv into ServeOptions or throws StartupError
// whose what() is the one line the user sees: what was wrong and what to do.
// Nothing here touches the file system or the network; opening disks and
// binding sockets happens in Server, which reports its own StartupErrors.
#pragma once

#include "util/log.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace fleece::server {

// A start-up failure: one line, shown to the user, non-zero exit.
class StartupError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class DiskFormat { raw, qcow2 };
enum class CacheMode { writeback, none };

// --disk NAME=PATH[,format=raw][,readonly][,cache=writeback|none]
struct DiskSpec {
  std::string name;
  std::string path;
  DiskFormat format = DiskFormat::raw;
  bool read_only = false;
  CacheMode cache = CacheMode::writeback;
  // Each qcow2 layer's L2 table cache in bytes (QEMU's l2-cache-size);
  // 0 = enough to cover 32 GiB of disk, at most 32 MiB.
  uint64_t l2_cache_bytes = 0;
};

// --listen unix:PATH | tcp:HOST:PORT | tcp:[V6ADDR]:PORT
struct ListenAddress {
  enum class Kind { unix_socket, tcp } kind = Kind::unix_socket;
  std::string path;  // unix
  std::string host;  // tcp, without brackets
  uint16_t port = 0; // tcp
  std::string to_string() const;  // as written on the command line
};

enum class TlsSetting { off, on, require };

struct TlsOptions {
  TlsSetting mode = TlsSetting::off;
  std::string creds_dir;   // --tls-creds DIR (X.509, QEMU layout)
  std::string psk_file;    // --tls-psk FILE (psktool format)
  bool verify_peer = false;
  std::string authz;       // --tls-authz LIST
};

struct ServeOptions {
  std::vector<DiskSpec> disks;
  std::vector<ListenAddress> listen;  // empty after parsing only if socket-activated
  std::string qmp_path = "./fleece.qmp";
  bool qmp_given = false;
  std::string store_dir;  // empty: beside each disk
  TlsOptions tls;
  unsigned threads = 0;   // 0: number of CPUs, at most 4
  log::Level log_level = log::Level::info;
  unsigned max_connections = 1000;
  std::chrono::milliseconds handshake_timeout{10'000};
};

// Parses the arguments after "serve" (argv[0] is the first option).
// Applies the default listen address unless use_default_listen is false
// (socket activation supplies the listeners instead).
ServeOptions parse_serve_options(const std::vector<std::string>& args,
                                 bool use_default_listen = true);

// Pieces, exposed for tests and for QMP (blockdev-add, nbd-server-start).
DiskSpec parse_disk_spec(std::string_view text);
// "4096", "64K", "1M", "2G" (binary multiples), else nullopt.
std::optional<uint64_t> parse_byte_size(std::string_view text);
ListenAddress parse_listen_address(std::string_view text);

// Usage text for --help and for errors that need it.
std::string serve_usage();

// Threads actually used: options.threads, or the CPU count capped at 4.
unsigned effective_threads(const ServeOptions& options);

}  // namespace fleece::server
