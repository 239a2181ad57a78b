#include "tls_test_support.hpp"

#include "tls/config.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <vector>

namespace fleece::tls::test {
namespace fs = std::filesystem;
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

struct ScratchRoot {
  fs::path root;
  ScratchRoot() {
    char tmpl[] = "/tmp/fleece-tls-test.XXXXXX";
    if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    root = tmpl;
  }
  ~ScratchRoot() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
};

ScratchRoot& scratch_root() {
  static ScratchRoot root;
  return root;
}

// The client's PSK, for the OpenSSL callbacks (tests are single-threaded).
std::string g_identity;
std::vector<uint8_t> g_key;

std::vector<uint8_t> from_hex(const std::string& hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

int use_psk_session(SSL* ssl, const EVP_MD*, const unsigned char** id, size_t* id_len, SSL_SESSION** out) {
  static constexpr unsigned char kAes128GcmSha256[] = {0x13, 0x01};
  SSL_SESSION* session = SSL_SESSION_new();
  SSL_SESSION_set1_master_key(session, g_key.data(), g_key.size());
  SSL_SESSION_set_cipher(session, SSL_CIPHER_find(ssl, kAes128GcmSha256));
  SSL_SESSION_set_protocol_version(session, TLS1_3_VERSION);
  *id = reinterpret_cast<const unsigned char*>(g_identity.data());
  *id_len = g_identity.size();
  *out = session;
  return 1;
}

unsigned psk_client(SSL*, const char*, char* identity, unsigned max_id, unsigned char* psk, unsigned max_psk) {
  if (g_identity.size() + 1 > max_id || g_key.size() > max_psk) return 0;
  std::memcpy(identity, g_identity.c_str(), g_identity.size() + 1);
  std::memcpy(psk, g_key.data(), g_key.size());
  return static_cast<unsigned>(g_key.size());
}

}  // namespace

const fs::path& pki() {
  static const fs::path dir = [] {
    fs::path out = scratch_root().root / "pki";
    fs::path script = fs::path(__FILE__).parent_path() / "../../interop/tls/make-pki.sh";
    std::string command = "bash '" + script.string() + "' '" + out.string() + "'";
    if (std::system(command.c_str()) != 0) throw std::runtime_error("make-pki.sh failed: " + command);
    return out;
  }();
  return dir;
}

ServerConfig x509(const fs::path& dir, bool verify, std::string authz) {
  ServerConfig config;
  config.creds_dir = dir.string();
  config.verify_peer = verify;
  config.authz = std::move(authz);
  return config;
}

fs::path scratch_dir() {
  static int counter = 0;
  fs::path dir = scratch_root().root / ("s" + std::to_string(++counter));
  fs::create_directories(dir);
  return dir;
}

fs::path copy_of(const std::string& name) {
  fs::path dir = scratch_dir() / name;
  fs::copy(pki() / name, dir, fs::copy_options::recursive);
  return dir;
}

void write_file(const fs::path& path, const std::string& text, unsigned mode) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  fs::permissions(path, static_cast<fs::perms>(mode));
}

std::string startup_error(const ServerConfig& config) {
  try {
    ServerContext context(config);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

LoopbackOutcome loopback(std::shared_ptr<const Credentials> credentials, const ClientSettings& client,
                         std::chrono::milliseconds timeout) {
  LoopbackOutcome outcome;
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));

  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    tcp::socket socket = co_await acceptor.async_accept(asio::use_awaitable);
    Stream<tcp::socket> stream(std::move(socket), *credentials);
    outcome.server = co_await accept(stream, "test-peer", timeout);
    if (!outcome.server) co_return;  // dropping the stream closes the connection
    char ping[4];
    auto [ec, n] = co_await asio::async_read(stream, asio::buffer(ping), asio::as_tuple(asio::use_awaitable));
    if (!ec && std::string(ping, 4) == "ping") {
      co_await asio::async_write(stream, asio::buffer("pong", 4), asio::as_tuple(asio::use_awaitable));
      co_await stream.async_shutdown(asio::as_tuple(asio::use_awaitable));
    }
  }, asio::detached);

  asio::ssl::context ctx(asio::ssl::context::tls_client);
  if (client.ca_dir) {
    ctx.load_verify_file(*client.ca_dir + "/ca-cert.pem");
    ctx.set_verify_mode(asio::ssl::verify_peer);
  } else {
    ctx.set_verify_mode(asio::ssl::verify_none);
  }
  if (client.cert_dir) {
    ctx.use_certificate_chain_file(*client.cert_dir + "/client-cert.pem");
    ctx.use_private_key_file(*client.cert_dir + "/client-key.pem", asio::ssl::context::pem);
  }
  if (client.tls12_only) SSL_CTX_set_max_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  if (client.psk_identity) {
    g_identity = *client.psk_identity;
    g_key = from_hex(client.psk_key_hex);
    if (client.tls12_only) {
      SSL_CTX_set_psk_client_callback(ctx.native_handle(), psk_client);
      SSL_CTX_set_cipher_list(ctx.native_handle(), client.tls12_ciphers.empty() ? "PSK" : client.tls12_ciphers.c_str());
    } else {
      SSL_CTX_set_psk_use_session_callback(ctx.native_handle(), use_psk_session);
    }
  }

  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    asio::ssl::stream<tcp::socket> stream(io, ctx);
    co_await stream.next_layer().async_connect(acceptor.local_endpoint(), asio::use_awaitable);
    if (client.stall) {
      asio::steady_timer wait(io, timeout + std::chrono::seconds(1));
      co_await wait.async_wait(asio::as_tuple(asio::use_awaitable));
      co_return;
    }
    if (client.send_garbage) {
      std::string junk(64, 'G');
      co_await asio::async_write(stream.next_layer(), asio::buffer(junk), asio::as_tuple(asio::use_awaitable));
      char c;
      co_await stream.next_layer().async_read_some(asio::buffer(&c, 1), asio::as_tuple(asio::use_awaitable));
      co_return;
    }
    auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::client, asio::as_tuple(asio::use_awaitable));
    outcome.client_error = ec;
    if (ec) co_return;
    outcome.client_protocol = SSL_get_version(stream.native_handle());
    co_await asio::async_write(stream, asio::buffer("ping", 4), asio::as_tuple(asio::use_awaitable));
    char pong[4];
    auto [rec, n] = co_await asio::async_read(stream, asio::buffer(pong), asio::as_tuple(asio::use_awaitable));
    outcome.echoed.assign(pong, n);
  }, asio::detached);

  io.run_for(timeout + std::chrono::seconds(5));
  return outcome;
}

}  // namespace fleece::tls::test
