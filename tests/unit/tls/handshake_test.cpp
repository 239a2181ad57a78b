// Loopback handshakes: fleece's server side (tls::accept) against an OpenSSL
// client, for X.509, verify-peer, PSK on TLS 1.3 and 1.2, authz and reload.
#include "tls/credentials.hpp"
#include "tls_test_support.hpp"

#include <doctest/doctest.h>

#include <fstream>

using namespace fleece::tls;
using namespace fleece::tls::test;
namespace fs = std::filesystem;

namespace {

std::string key_of(const std::string& identity, const fs::path& file) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(identity + ":")) return line.substr(identity.size() + 1);
  }
  return "";
}

std::string dir(const char* name) { return (pki() / name).string(); }

bool refused_with(const LoopbackOutcome& o, std::errc e) {
  return !o.server && o.server.error() == std::make_error_code(e) && o.echoed.empty();
}

}  // namespace

TEST_CASE("handshake: X.509 server, anonymous client, TLS 1.3 and data both ways") {
  ServerContext context(x509(pki() / "server"));
  auto o = loopback(context.current(), {.ca_dir = dir("client")});
  REQUIRE(o.server.has_value());
  CHECK_FALSE(o.client_error);
  CHECK(o.echoed == "pong");
  CHECK(o.client_protocol == "TLSv1.3");
  CHECK(o.server->kind == PeerIdentity::Kind::none);
  CHECK(o.server->protocol == "TLSv1.3");
  CHECK(o.server->describe() == "anonymous");
}

TEST_CASE("handshake: TLS 1.2 is accepted, with a forward-secret AEAD suite") {
  ServerContext context(x509(pki() / "server"));
  auto o = loopback(context.current(), {.ca_dir = dir("client"), .tls12_only = true});
  REQUIRE(o.server.has_value());
  CHECK(o.echoed == "pong");
  CHECK(o.server->protocol == "TLSv1.2");
  CHECK(o.server->cipher.starts_with("ECDHE-"));
}

TEST_CASE("handshake: a client trusting another CA refuses the server") {
  ServerContext context(x509(pki() / "server-rogue"));
  auto o = loopback(context.current(), {.ca_dir = dir("client")});
  CHECK(o.client_error);
  CHECK(refused_with(o, std::errc::connection_aborted));
}

TEST_CASE("handshake: verify-peer wants a client certificate from the CA") {
  ServerContext context(x509(pki() / "server", true));
  SUBCASE("with one: the DN is the identity") {
    auto o = loopback(context.current(), {.ca_dir = dir("client"), .cert_dir = dir("client")});
    REQUIRE(o.server.has_value());
    CHECK(o.echoed == "pong");
    CHECK(o.server->kind == PeerIdentity::Kind::x509);
    CHECK(o.server->name == "CN=backup1,O=Example,C=GB");
  }
  SUBCASE("without one") {
    auto o = loopback(context.current(), {.ca_dir = dir("client")});
    CHECK(refused_with(o, std::errc::connection_aborted));
  }
  SUBCASE("with one from an unknown CA") {
    auto o = loopback(context.current(), {.ca_dir = dir("client"), .cert_dir = dir("client-rogue")});
    CHECK(refused_with(o, std::errc::connection_aborted));
  }
  SUBCASE("over TLS 1.2") {
    auto o = loopback(context.current(), {.ca_dir = dir("client"), .cert_dir = dir("client"), .tls12_only = true});
    REQUIRE(o.server.has_value());
    CHECK(o.server->name == "CN=backup1,O=Example,C=GB");
    auto refused = loopback(context.current(), {.ca_dir = dir("client"), .tls12_only = true});
    CHECK(refused.client_error);  // TLS 1.2 fails inside the client's handshake
    CHECK(refused_with(refused, std::errc::connection_aborted));
  }
}

TEST_CASE("handshake: authz by DN") {
  ServerContext context(x509(pki() / "server", true, "CN=backup*,O=Example,C=GB"));
  auto allowed = loopback(context.current(), {.ca_dir = dir("client"), .cert_dir = dir("client")});
  REQUIRE(allowed.server.has_value());
  CHECK(allowed.echoed == "pong");
  auto denied = loopback(context.current(), {.ca_dir = dir("client"), .cert_dir = dir("client-other")});
  CHECK(refused_with(denied, std::errc::permission_denied));
}

TEST_CASE("handshake: authz without verify-peer admits no X.509 client") {
  ServerContext context(x509(pki() / "server", false, "CN=backup1,O=Example,C=GB"));
  auto o = loopback(context.current(), {.ca_dir = dir("client"), .cert_dir = dir("client")});
  CHECK(refused_with(o, std::errc::permission_denied));
}

TEST_CASE("handshake: PSK over TLS 1.3 and TLS 1.2, right and wrong key") {
  ServerConfig c;
  c.psk_file = dir("keys.psk");
  ServerContext context(c);
  const std::string alice = key_of("alice", pki() / "keys.psk");
  const std::string wrong = key_of("alice", pki() / "wrong.psk");
  REQUIRE(alice.size() == 64);
  REQUIRE(wrong != alice);

  auto o = loopback(context.current(), {.psk_identity = "alice", .psk_key_hex = alice});
  REQUIRE(o.server.has_value());
  CHECK(o.echoed == "pong");
  CHECK(o.server->kind == PeerIdentity::Kind::psk);
  CHECK(o.server->name == "alice");
  CHECK(o.server->protocol == "TLSv1.3");

  auto o12 = loopback(context.current(), {.psk_identity = "alice", .psk_key_hex = alice, .tls12_only = true});
  REQUIRE(o12.server.has_value());
  CHECK(o12.echoed == "pong");
  CHECK(o12.server->describe() == "psk 'alice'");
  CHECK(o12.server->protocol == "TLSv1.2");

  CHECK(refused_with(loopback(context.current(), {.psk_identity = "alice", .psk_key_hex = wrong}),
                     std::errc::connection_aborted));
  CHECK(refused_with(loopback(context.current(), {.psk_identity = "alice", .psk_key_hex = wrong, .tls12_only = true}),
                     std::errc::connection_aborted));
  CHECK(refused_with(loopback(context.current(), {.psk_identity = "mallory", .psk_key_hex = alice}),
                     std::errc::connection_aborted));
}

TEST_CASE("handshake: dh-params.pem from certtool is used for DHE-PSK on TLS 1.2") {
  ServerConfig c = x509(pki() / "server-dh");
  c.psk_file = dir("keys.psk");
  ServerContext context(c);
  auto o = loopback(context.current(), {.psk_identity = "alice",
                                        .psk_key_hex = key_of("alice", pki() / "keys.psk"),
                                        .tls12_only = true,
                                        .tls12_ciphers = "DHE-PSK-AES256-GCM-SHA384"});
  REQUIRE(o.server.has_value());
  CHECK(o.echoed == "pong");
  CHECK(o.server->cipher == "DHE-PSK-AES256-GCM-SHA384");
}

TEST_CASE("handshake: PSK beside X.509, authz by PSK identity") {
  ServerConfig c = x509(pki() / "server", true, "alice");
  c.psk_file = dir("keys.psk");
  ServerContext context(c);
  auto alice = loopback(context.current(), {.psk_identity = "alice", .psk_key_hex = key_of("alice", pki() / "keys.psk")});
  REQUIRE(alice.server.has_value());
  CHECK(alice.server->describe() == "psk 'alice'");
  CHECK(alice.echoed == "pong");
  auto bob = loopback(context.current(), {.psk_identity = "bob", .psk_key_hex = key_of("bob", pki() / "keys.psk")});
  CHECK(refused_with(bob, std::errc::permission_denied));
  auto cert = loopback(context.current(), {.ca_dir = dir("client"), .cert_dir = dir("client")});
  CHECK(refused_with(cert, std::errc::permission_denied));  // a verified DN, but not in the list
}

TEST_CASE("handshake: garbage instead of a ClientHello, and a stalled client") {
  ServerContext context(x509(pki() / "server"));
  CHECK(refused_with(loopback(context.current(), {.send_garbage = true}), std::errc::connection_aborted));
  auto start = std::chrono::steady_clock::now();
  auto stalled = loopback(context.current(), {.stall = true}, std::chrono::milliseconds(300));
  CHECK(refused_with(stalled, std::errc::timed_out));
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(3));
}

TEST_CASE("reload: new files for new connections, old ones keep theirs, errors keep the current") {
  fs::path creds = copy_of("server");
  ServerContext context(x509(creds));
  auto first = context.current();
  CHECK(loopback(first, {.ca_dir = dir("client")}).echoed == "pong");

  // Replace the credentials with ones from another CA.
  for (const char* f : {"ca-cert.pem", "server-cert.pem", "server-key.pem"}) {
    fs::copy_file(pki() / "server-rogue" / f, creds / f, fs::copy_options::overwrite_existing);
  }
  ReloadOutcome reloaded = context.reload();
  CHECK(reloaded.ok);
  CHECK(reloaded.generation == 2);
  CHECK(context.generation() == 2);
  CHECK(context.current() != first);
  CHECK(context.current()->generation() == 2);
  CHECK(loopback(context.current(), {.ca_dir = dir("client-rogue")}).echoed.empty());  // client-rogue trusts 'ca'...
  CHECK(loopback(context.current(), {.ca_dir = (pki() / "server-rogue").string()}).echoed == "pong");
  CHECK(loopback(context.current(), {.ca_dir = dir("client")}).client_error);  // old CA no longer fits
  CHECK(loopback(first, {.ca_dir = dir("client")}).echoed == "pong");          // generation 1 still works

  // A broken file: the error is reported and generation 2 stays.
  fs::copy_file(pki() / "other-key.pem", creds / "server-key.pem", fs::copy_options::overwrite_existing);
  ReloadOutcome failed = context.reload();
  CHECK_FALSE(failed.ok);
  CHECK(failed.message.find("does not match server certificate") != std::string::npos);
  CHECK(failed.generation == 2);
  CHECK(context.generation() == 2);
  CHECK(loopback(context.current(), {.ca_dir = (pki() / "server-rogue").string()}).echoed == "pong");
}
