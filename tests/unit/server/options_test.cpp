#include "server/options.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace fleece::server;

namespace {

ServeOptions parse(std::vector<std::string> args) { return parse_serve_options(args); }

std::string error_of(std::vector<std::string> args) {
  try {
    parse_serve_options(args);
  } catch (const StartupError& e) {
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("serve options: defaults") {
  auto o = parse({});
  CHECK(o.disks.empty());
  REQUIRE(o.listen.size() == 1);
  CHECK(o.listen[0].kind == ListenAddress::Kind::unix_socket);
  CHECK(o.listen[0].path == "./fleece.sock");
  CHECK(o.max_connections == 1000);
  CHECK(o.handshake_timeout == std::chrono::seconds(10));
  CHECK(o.tls.mode == TlsSetting::off);
  CHECK(o.log_level == fleece::log::Level::info);
  CHECK(effective_threads(o) >= 1);
  CHECK(effective_threads(o) <= 4);
  CHECK(parse_serve_options({}, false).listen.empty());
}

TEST_CASE("serve options: a full command line") {
  auto o = parse({"--disk", "vda=/img/a.raw,format=raw,readonly,cache=none", "--disk=vdb=/img/b.raw",
                  "--listen", "unix:/run/f.sock", "--listen", "tcp:127.0.0.1:10809", "--listen",
                  "tcp:[::1]:10810", "--qmp", "unix:/run/f.qmp", "--store-dir", "/var/tmp",
                  "--tls", "require", "--tls-creds", "/etc/pki", "--tls-psk", "/etc/keys.psk",
                  "--tls-verify-peer", "--tls-authz", "a,b", "--threads", "3", "--log-level",
                  "debug", "--max-connections", "7", "--handshake-timeout", "2"});
  REQUIRE(o.disks.size() == 2);
  CHECK(o.disks[0].name == "vda");
  CHECK(o.disks[0].path == "/img/a.raw");
  CHECK(o.disks[0].read_only);
  CHECK(o.disks[0].cache == CacheMode::none);
  CHECK(o.disks[1].name == "vdb");
  CHECK(o.disks[1].path == "/img/b.raw");
  CHECK_FALSE(o.disks[1].read_only);
  CHECK(o.disks[1].cache == CacheMode::writeback);
  REQUIRE(o.listen.size() == 3);
  CHECK(o.listen[0].to_string() == "unix:/run/f.sock");
  CHECK(o.listen[1].kind == ListenAddress::Kind::tcp);
  CHECK(o.listen[1].host == "127.0.0.1");
  CHECK(o.listen[1].port == 10809);
  CHECK(o.listen[2].host == "::1");
  CHECK(o.listen[2].port == 10810);
  CHECK(o.listen[2].to_string() == "tcp:[::1]:10810");
  CHECK(o.qmp_path == "/run/f.qmp");
  CHECK(o.qmp_given);
  CHECK(o.store_dir == "/var/tmp");
  CHECK(o.tls.creds_dir == "/etc/pki");
  CHECK(o.tls.psk_file == "/etc/keys.psk");
  CHECK(o.tls.verify_peer);
  CHECK(o.tls.authz == "a,b");
  CHECK(o.tls.mode == TlsSetting::require);
  CHECK(o.threads == 3);
  CHECK(effective_threads(o) == 3);
  CHECK(o.log_level == fleece::log::Level::debug);
  CHECK(o.max_connections == 7);
  CHECK(o.handshake_timeout == std::chrono::seconds(2));
}

TEST_CASE("serve options: a disk path may contain '='") {
  auto d = parse_disk_spec("x=/tmp/a=b.img");
  CHECK(d.name == "x");
  CHECK(d.path == "/tmp/a=b.img");
  CHECK(parse_disk_spec("x=/i,readonly=off").read_only == false);
  CHECK(parse_disk_spec("x=/i,read-only=on").read_only == true);
  CHECK(parse_disk_spec("x=/i,format=qcow2").format == DiskFormat::qcow2);
  CHECK(parse_disk_spec("x=/i").format == DiskFormat::raw);  // never probed: a guest could forge a header
}

TEST_CASE("serve options: l2-cache-size for qcow2 disks, in bytes with K/M/G") {
  CHECK(parse_disk_spec("x=/i,format=qcow2").l2_cache_bytes == 0);  // the default
  CHECK(parse_disk_spec("x=/i,format=qcow2,l2-cache-size=4096").l2_cache_bytes == 4096);
  CHECK(parse_disk_spec("x=/i,l2-cache-size=64K,format=qcow2").l2_cache_bytes == 65536);
  CHECK(parse_disk_spec("x=/i,format=qcow2,l2-cache-size=2M").l2_cache_bytes == 2u << 20);
  CHECK(parse_byte_size("1G") == uint64_t(1) << 30);
  CHECK_FALSE(parse_byte_size(""));
  CHECK_FALSE(parse_byte_size("M"));
  CHECK_FALSE(parse_byte_size("-1"));
  CHECK_FALSE(parse_byte_size("1T"));
  CHECK_FALSE(parse_byte_size("99999999999G"));  // does not fit in 64 bits
  CHECK(contains(error_of({"--disk", "a=/p,format=qcow2,l2-cache-size=lots"}),
                 "l2-cache-size takes a size in bytes"));
  CHECK(contains(error_of({"--disk", "a=/p,l2-cache-size=1M"}), "l2-cache-size is a qcow2 setting"));
}

TEST_CASE("serve options: every error names the problem") {
  CHECK(contains(error_of({"--disk"}), "--disk needs a value"));
  CHECK(contains(error_of({"--disk", "noequals"}), "expected NAME=PATH"));
  CHECK(contains(error_of({"--disk", "=/path"}), "expected NAME=PATH"));
  CHECK(contains(error_of({"--disk", "a="}), "the path is empty"));
  CHECK(contains(error_of({"--disk", "a@1=/p"}), "'@' is reserved"));
  CHECK(contains(error_of({"--disk", "a=/p,format=vmdk"}), "unknown format 'vmdk'"));
  CHECK(contains(error_of({"--disk", "a=/p,cache=unsafe"}), "unknown cache mode 'unsafe'"));
  CHECK(contains(error_of({"--disk", "a=/p,readonly=maybe"}), "readonly takes no value"));
  CHECK(contains(error_of({"--disk", "a=/p,speed=9"}), "unknown setting 'speed=9'"));
  CHECK(contains(error_of({"--disk", "a=/p", "--disk", "a=/q"}), "used twice"));
  CHECK(contains(error_of({"--listen", "udp:1"}), "expected unix:PATH or tcp:HOST:PORT"));
  CHECK(contains(error_of({"--listen", "unix:"}), "needs a path"));
  CHECK(contains(error_of({"--listen", "unix:/" + std::string(200, 'x')}), "shorter than 108"));
  CHECK(contains(error_of({"--listen", "tcp:host"}), "expected tcp:HOST:PORT"));
  CHECK(contains(error_of({"--listen", "tcp::10809"}), "the host is empty"));
  CHECK(contains(error_of({"--listen", "tcp:h:99999"}), "not a number from 0 to 65535"));
  CHECK(contains(error_of({"--listen", "tcp:h:port"}), "not a number"));
  CHECK(contains(error_of({"--listen", "tcp:::1:5"}), "brackets"));
  CHECK(contains(error_of({"--listen", "tcp:[::1:5"}), "expected tcp:[IPV6]:PORT"));
  CHECK(contains(error_of({"--listen", "unix:/a", "--listen", "unix:/a"}), "given twice"));
  CHECK(contains(error_of({"--qmp", "tcp:1.2.3.4:5"}), "only unix:PATH"));
  CHECK(contains(error_of({"--qmp", "unix:"}), "needs a path"));
  CHECK(contains(error_of({"--store-dir", ""}), "needs a directory"));
  CHECK(contains(error_of({"--tls", "on"}), "--tls on needs credentials"));
  CHECK(contains(error_of({"--tls", "require"}), "--tls require needs credentials"));
  CHECK(contains(error_of({"--tls", "off", "--tls-psk", "/k"}), "--tls off, but TLS settings are given"));
  CHECK(contains(error_of({"--tls", "on", "--tls-psk", "/k", "--tls-verify-peer"}), "needs --tls-creds DIR"));
  CHECK(parse({"--tls-creds", "/etc/pki"}).tls.mode == TlsSetting::require);  // as qemu-nbd --tls-creds
  CHECK(parse({"--tls", "on", "--tls-psk", "/k"}).tls.mode == TlsSetting::on);
  CHECK(contains(error_of({"--tls", "maybe"}), "expected off, on or require"));
  CHECK(contains(error_of({"--tls-verify-peer=yes"}), "takes no value"));
  CHECK(contains(error_of({"--threads", "0"}), "--threads: '0' is not a number from 1 to 64"));
  CHECK(contains(error_of({"--threads", "x"}), "not a number"));
  CHECK(contains(error_of({"--log-level", "loud"}), "--log-level 'loud'"));
  CHECK(contains(error_of({"--max-connections", "0"}), "--max-connections"));
  CHECK(contains(error_of({"--handshake-timeout", "-1"}), "--handshake-timeout"));
  CHECK(contains(error_of({"--frobnicate"}), "unknown option '--frobnicate'"));
  CHECK(contains(error_of({"stray"}), "unexpected argument 'stray'"));
}
