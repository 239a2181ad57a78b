#include "server/options.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <optional>
#include <thread>

namespace fleece::server {
namespace {

[[noreturn]] void fail(std::string message) { throw StartupError(std::move(message)); }

template <class T>
T parse_number(std::string_view text, std::string_view option, T min, T max) {
  T value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    fail(fmt::format("{}: '{}' is not a number from {} to {}", option, text, min, max));
  }
  return value;
}

std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t pos = text.find(sep, start);
    parts.push_back(text.substr(start, pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return parts;
}

}  // namespace

std::string ListenAddress::to_string() const {
  if (kind == Kind::unix_socket) return "unix:" + path;
  if (host.find(':') != std::string::npos) return fmt::format("tcp:[{}]:{}", host, port);
  return fmt::format("tcp:{}:{}", host, port);
}

// A value that does not fit in 64 bits is refused too.
std::optional<uint64_t> parse_byte_size(std::string_view text) {
  uint64_t shift = 0;
  if (!text.empty()) {
    switch (text.back()) {
      case 'K': case 'k': shift = 10; break;
      case 'M': case 'm': shift = 20; break;
      case 'G': case 'g': shift = 30; break;
      default: break;
    }
    if (shift) text.remove_suffix(1);
  }
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  if (n > (UINT64_MAX >> shift)) return std::nullopt;
  return n << shift;
}

DiskSpec parse_disk_spec(std::string_view text) {
  DiskSpec disk;
  auto eq = text.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    fail(fmt::format("--disk '{}': expected NAME=PATH[,format=raw|qcow2][,readonly][,cache=writeback|none]"
                     "[,l2-cache-size=BYTES]",
                     text));
  }
  disk.name = std::string(text.substr(0, eq));
  if (disk.name.size() > 4096) fail("--disk: the name is longer than 4096 bytes");
  if (disk.name.find('@') != std::string::npos) {
    fail(fmt::format("--disk '{}': '@' is reserved for snapshot exports (NAME@ID); choose another name",
                     disk.name));
  }
  auto parts = split(text.substr(eq + 1), ',');
  disk.path = std::string(parts[0]);
  if (disk.path.empty()) fail(fmt::format("--disk {}: the path is empty; write {}=PATH", disk.name, disk.name));
  bool l2_cache_given = false;
  for (size_t i = 1; i < parts.size(); ++i) {
    std::string_view part = parts[i];
    auto peq = part.find('=');
    std::string_view key = part.substr(0, peq);
    std::string_view value = peq == std::string_view::npos ? std::string_view{} : part.substr(peq + 1);
    if (key == "format") {
      if (value == "raw") {
        disk.format = DiskFormat::raw;
      } else if (value == "qcow2") {
        disk.format = DiskFormat::qcow2;
      } else {
        fail(fmt::format("--disk {}: unknown format '{}'; use format=raw or format=qcow2", disk.name, value));
      }
    } else if (key == "readonly" || key == "read-only") {
      if (peq != std::string_view::npos && value != "on" && value != "true" && value != "off" &&
          value != "false") {
        fail(fmt::format("--disk {}: readonly takes no value (or on/off), not '{}'", disk.name, value));
      }
      disk.read_only = peq == std::string_view::npos || value == "on" || value == "true";
    } else if (key == "cache") {
      if (value == "writeback") {
        disk.cache = CacheMode::writeback;
      } else if (value == "none") {
        disk.cache = CacheMode::none;
      } else {
        fail(fmt::format("--disk {}: unknown cache mode '{}'; use cache=writeback or cache=none",
                         disk.name, value));
      }
    } else if (key == "l2-cache-size") {
      auto bytes = parse_byte_size(value);
      if (!bytes) {
        fail(fmt::format("--disk {}: l2-cache-size takes a size in bytes (K, M or G suffix allowed), not '{}'",
                         disk.name, value));
      }
      disk.l2_cache_bytes = *bytes;
      l2_cache_given = true;
    } else {
      fail(fmt::format("--disk {}: unknown setting '{}'; known: format=raw|qcow2, readonly, "
                       "cache=writeback|none, l2-cache-size=BYTES", disk.name, part));
    }
  }
  if (l2_cache_given && disk.format != DiskFormat::qcow2) {
    fail(fmt::format("--disk {}: l2-cache-size is a qcow2 setting; add format=qcow2", disk.name));
  }
  return disk;
}

ListenAddress parse_listen_address(std::string_view text) {
  ListenAddress address;
  if (text.starts_with("unix:")) {
    address.kind = ListenAddress::Kind::unix_socket;
    address.path = std::string(text.substr(5));
    if (address.path.empty()) fail("--listen unix: needs a path, e.g. unix:/run/fleece.sock");
    if (address.path.size() >= 108) {
      fail(fmt::format("--listen {}: a Unix socket path must be shorter than 108 bytes; use a shorter path",
                       text));
    }
    return address;
  }
  if (text.starts_with("tcp:")) {
    address.kind = ListenAddress::Kind::tcp;
    std::string_view rest = text.substr(4);
    std::string_view port;
    if (rest.starts_with("[")) {
      auto close = rest.find(']');
      if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
        fail(fmt::format("--listen {}: expected tcp:[IPV6]:PORT", text));
      }
      address.host = std::string(rest.substr(1, close - 1));
      port = rest.substr(close + 2);
    } else {
      auto colon = rest.rfind(':');
      if (colon == std::string_view::npos) fail(fmt::format("--listen {}: expected tcp:HOST:PORT", text));
      address.host = std::string(rest.substr(0, colon));
      if (address.host.find(':') != std::string::npos) {
        fail(fmt::format("--listen {}: write IPv6 addresses in brackets, tcp:[::1]:PORT", text));
      }
      port = rest.substr(colon + 1);
    }
    if (address.host.empty()) fail(fmt::format("--listen {}: the host is empty; use e.g. tcp:0.0.0.0:10809", text));
    address.port = parse_number<uint16_t>(port, fmt::format("--listen {}: port", text), 0, 65535);
    return address;
  }
  fail(fmt::format("--listen '{}': expected unix:PATH or tcp:HOST:PORT", text));
}

std::string serve_usage() {
  return "usage: fleece serve --disk NAME=PATH[,format=raw|qcow2][,readonly][,cache=writeback|none]"
         "[,l2-cache-size=BYTES] ...\n"
         "                    [--listen unix:PATH|tcp:HOST:PORT ...] (default unix:./fleece.sock)\n"
         "                    [--qmp unix:PATH] [--store-dir DIR]\n"
         "                    [--tls off|on|require] [--tls-creds DIR] [--tls-psk FILE] [--tls-verify-peer]\n"
         "                    [--tls-authz 'DN;DN;PSK-ID'|@FILE] [--threads N] [--log-level trace|debug|info|warn|error|off]\n"
         "                    [--max-connections N] [--handshake-timeout SECONDS]\n";
}

ServeOptions parse_serve_options(const std::vector<std::string>& args, bool use_default_listen) {
  ServeOptions options;
  bool tls_given = false;  // --tls seen
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    std::string name(arg);
    std::optional<std::string> inline_value;
    if (arg.starts_with("--")) {
      if (auto eq = arg.find('='); eq != std::string_view::npos) {
        name = std::string(arg.substr(0, eq));
        inline_value = std::string(arg.substr(eq + 1));
      }
    } else {
      fail(fmt::format("unexpected argument '{}'; options start with -- (see fleece serve --help)", arg));
    }
    auto value = [&]() -> std::string {
      if (inline_value) return *inline_value;
      if (i + 1 >= args.size()) fail(fmt::format("{} needs a value (see fleece serve --help)", name));
      return args[++i];
    };
    auto no_value = [&] {
      if (inline_value) fail(fmt::format("{} takes no value", name));
    };

    if (name == "--disk") {
      DiskSpec disk = parse_disk_spec(value());
      for (const auto& d : options.disks) {
        if (d.name == disk.name) fail(fmt::format("--disk {}: the name is used twice; give each disk its own name", disk.name));
      }
      options.disks.push_back(std::move(disk));
    } else if (name == "--listen") {
      options.listen.push_back(parse_listen_address(value()));
    } else if (name == "--qmp") {
      std::string v = value();
      if (v.starts_with("unix:")) v = v.substr(5);
      else if (v.find(':') != std::string::npos && !v.starts_with("/") && !v.starts_with(".")) {
        fail(fmt::format("--qmp '{}': only unix:PATH is supported", v));
      }
      if (v.empty()) fail("--qmp needs a path, e.g. unix:./fleece.qmp");
      options.qmp_path = v;
      options.qmp_given = true;
    } else if (name == "--store-dir") {
      options.store_dir = value();
      if (options.store_dir.empty()) fail("--store-dir needs a directory");
    } else if (name == "--tls") {
      std::string v = value();
      tls_given = true;
      if (v == "off") options.tls.mode = TlsSetting::off;
      else if (v == "on") options.tls.mode = TlsSetting::on;
      else if (v == "require") options.tls.mode = TlsSetting::require;
      else {
        fail(fmt::format("--tls '{}': expected off, on or require", v));
      }
    } else if (name == "--tls-creds") {
      options.tls.creds_dir = value();
    } else if (name == "--tls-psk") {
      options.tls.psk_file = value();
    } else if (name == "--tls-verify-peer") {
      no_value();
      options.tls.verify_peer = true;
    } else if (name == "--tls-authz") {
      options.tls.authz = value();
    } else if (name == "--threads") {
      options.threads = parse_number<unsigned>(value(), "--threads", 1, 64);
    } else if (name == "--log-level") {
      std::string v = value();
      auto level = log::parse_level(v);
      if (!level) fail(fmt::format("--log-level '{}': expected trace, debug, info, warn, error or off", v));
      options.log_level = *level;
    } else if (name == "--max-connections") {
      options.max_connections = parse_number<unsigned>(value(), "--max-connections", 1, 1'000'000);
    } else if (name == "--handshake-timeout") {
      options.handshake_timeout =
          std::chrono::seconds(parse_number<unsigned>(value(), "--handshake-timeout", 1, 86400));
    } else {
      fail(fmt::format("unknown option '{}' (see fleece serve --help)", name));
    }
  }
  // Credentials without --tls mean TLS is wanted (as with qemu-nbd --tls-creds).
  const TlsOptions& tls = options.tls;
  bool tls_creds = !tls.creds_dir.empty() || !tls.psk_file.empty();
  if (!tls_given && tls_creds) options.tls.mode = TlsSetting::require;
  if (tls.mode == TlsSetting::off && (tls_creds || tls.verify_peer || !tls.authz.empty())) {
    fail("--tls off, but TLS settings are given (--tls-creds, --tls-psk, --tls-verify-peer, --tls-authz); drop one or the other");
  }
  if (tls.mode != TlsSetting::off && !tls_creds) {
    fail(fmt::format("--tls {} needs credentials: --tls-creds DIR (X.509, QEMU's layout) and/or --tls-psk FILE",
                     tls.mode == TlsSetting::on ? "on" : "require"));
  }
  if (tls.verify_peer && tls.creds_dir.empty()) {
    fail("--tls-verify-peer checks client certificates and needs --tls-creds DIR with ca-cert.pem");
  }
  if (options.listen.empty() && use_default_listen) {
    options.listen.push_back(parse_listen_address("unix:./fleece.sock"));
  }
  for (size_t i = 0; i < options.listen.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (options.listen[i].to_string() == options.listen[j].to_string()) {
        fail(fmt::format("--listen {}: given twice", options.listen[i].to_string()));
      }
    }
  }
  return options;
}

unsigned effective_threads(const ServeOptions& options) {
  if (options.threads) return options.threads;
  unsigned cpus = std::thread::hardware_concurrency();
  return std::clamp(cpus, 1u, 4u);
}

}  // namespace fleece::server
