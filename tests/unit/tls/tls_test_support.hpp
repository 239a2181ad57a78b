// Test support for tls/: a PKI made once per test run with certtool and
// psktool (tests/interop/tls/make-pki.sh), scratch copies of its
// directories, and a loopback TLS connection: fleece's server side
// (tls::accept) against an OpenSSL client driven through Asio.
#pragma once

#include "tls/asio_stream.hpp"
#include "tls/server_context.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>

#include <filesystem>
#include <optional>
#include <string>

namespace fleece::tls::test {

// The directory make-pki.sh filled (see the script for what is in it).
const std::filesystem::path& pki();
// A server configuration with the X.509 credentials in dir (for example
// pki() / "server"), client certificates required when verify.
ServerConfig x509(const std::filesystem::path& dir, bool verify = false, std::string authz = "");
// A fresh scratch directory, removed at exit.
std::filesystem::path scratch_dir();
// Copies pki()/name into a fresh scratch directory and returns it.
std::filesystem::path copy_of(const std::string& name);
void write_file(const std::filesystem::path& path, const std::string& text, unsigned mode = 0600);
// The ConfigError message ServerContext's constructor throws ("" if none).
std::string startup_error(const ServerConfig& config);

struct ClientSettings {
  std::optional<std::string> ca_dir;       // verify the server against DIR/ca-cert.pem
  std::optional<std::string> cert_dir;     // present DIR/client-cert.pem + client-key.pem
  std::optional<std::string> psk_identity; // with psk_key_hex
  std::string psk_key_hex;
  bool tls12_only = false;
  std::string tls12_ciphers;  // OpenSSL cipher list for TLS 1.2 ("" = default, "PSK" with a PSK)
  bool send_garbage = false;  // write junk instead of a ClientHello
  bool stall = false;         // connect and send nothing
};

struct LoopbackOutcome {
  Result<PeerIdentity> server = std::make_error_code(std::errc::not_connected);
  boost::system::error_code client_error;  // of the client's handshake
  std::string echoed;                      // what the client read back after "ping"
  std::string client_protocol;
};

// One connection: the server accepts with `credentials` and a handshake
// timeout, then echoes "pong" to "ping"; the client follows `client`.
LoopbackOutcome loopback(std::shared_ptr<const Credentials> credentials, const ClientSettings& client,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace fleece::tls::test
