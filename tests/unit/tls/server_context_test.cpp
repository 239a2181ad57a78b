// Start-up checks of ServerContext: one clear message per way a credential
// can be wrong.
#include "tls/credentials.hpp"
#include "tls/server_context.hpp"
#include "tls_test_support.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <unistd.h>

using namespace fleece::tls;
using namespace fleece::tls::test;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

ServerConfig psk(const fs::path& file) {
  ServerConfig c;
  c.psk_file = file.string();
  return c;
}

}  // namespace

TEST_CASE("context: good X.509 and PSK credentials load and are summarized") {
  ServerConfig c = x509(pki() / "server", true);
  c.psk_file = (pki() / "keys.psk").string();
  c.authz = "CN=backup1,O=Example,C=GB;alice";
  ServerContext context(c);
  CHECK(context.generation() == 1);
  CHECK(context.describe() ==
        "x509 'CN=localhost,O=fleece test' (client certificates required), psk (2 identities), authz: 2 entries");
  CHECK(context.current()->warnings().empty());
}

TEST_CASE("context: nothing to use, or verify-peer without X.509") {
  CHECK(startup_error({}) == "TLS needs credentials: --tls-creds DIR (X.509) and/or --tls-psk FILE");
  ServerConfig c = psk(pki() / "keys.psk");
  c.verify_peer = true;
  CHECK(startup_error(c) == "--tls-verify-peer checks client certificates and needs --tls-creds DIR with ca-cert.pem");
}

TEST_CASE("context: missing directory and missing files are named") {
  CHECK(startup_error(x509("/nonexistent/creds")).starts_with("--tls-creds '/nonexistent/creds': no such directory"));

  fs::path dir = copy_of("server");
  fs::remove(dir / "server-key.pem");
  CHECK(startup_error(x509(dir)) == "server key '" + (dir / "server-key.pem").string() + "': no such file");

  fs::remove(dir / "server-cert.pem");
  CHECK(startup_error(x509(dir)) == "server certificate '" + (dir / "server-cert.pem").string() + "': no such file");

  dir = copy_of("server");
  fs::remove(dir / "ca-cert.pem");
  CHECK(startup_error(x509(dir)) == "");  // the CA is only needed to check clients
  CHECK(startup_error(x509(dir, true)) == "--tls-verify-peer: CA certificate '" + (dir / "ca-cert.pem").string() +
                                              "': no such file; it is needed to check client certificates");
}

TEST_CASE("context: files that hold the wrong thing") {
  fs::path dir = copy_of("server");
  write_file(dir / "server-cert.pem", "not a certificate\n");
  CHECK(startup_error(x509(dir)) == "server certificate '" + (dir / "server-cert.pem").string() +
                                        "': no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)");
  dir = copy_of("server");
  write_file(dir / "server-key.pem", slurp(dir / "server-cert.pem"));
  CHECK(startup_error(x509(dir)).starts_with("server key '" + (dir / "server-key.pem").string() +
                                             "': no usable PEM private key in it"));
  dir = copy_of("server");
  std::string cmd = "openssl pkey -in '" + (dir / "server-key.pem").string() + "' -aes256 -passout pass:x -out '" +
                    (dir / "enc.pem").string() + "'";
  REQUIRE(std::system(cmd.c_str()) == 0);
  fs::rename(dir / "enc.pem", dir / "server-key.pem");
  CHECK(startup_error(x509(dir)).starts_with("server key '" + (dir / "server-key.pem").string() + "' is encrypted"));

  dir = copy_of("server");
  write_file(dir / "dh-params.pem", "junk\n");
  CHECK(startup_error(x509(dir)).starts_with("DH parameters '" + (dir / "dh-params.pem").string() +
                                             "': no PEM DH parameters in it"));
}

TEST_CASE("context: a key that belongs to another certificate") {
  fs::path dir = pki() / "server-mismatch";
  CHECK(startup_error(x509(dir)) == "server key '" + (dir / "server-key.pem").string() +
                                        "' does not match server certificate '" + (dir / "server-cert.pem").string() +
                                        "' (it belongs to another certificate)");
}

TEST_CASE("context: expired and not yet valid certificates") {
  fs::path dir = pki() / "server-expired";
  CHECK(startup_error(x509(dir)) == "server certificate '" + (dir / "server-cert.pem").string() +
                                        "' (CN=localhost,O=fleece test) expired on 2002-01-01 00:00:00 UTC; renew it");
  dir = pki() / "server-future";
  CHECK(startup_error(x509(dir)) ==
        "server certificate '" + (dir / "server-cert.pem").string() +
            "' (CN=localhost,O=fleece test) is not valid before 2090-01-01 00:00:00 UTC; check the clock or make a new one");
  // An expired CA refuses only when it must check clients.
  dir = copy_of("server");
  fs::copy_file(pki() / "srv-expired-cert.pem", dir / "ca-cert.pem", fs::copy_options::overwrite_existing);
  CHECK(startup_error(x509(dir, true)).find("expired on 2002-01-01") != std::string::npos);
  ServerContext lenient(x509(dir));
  CHECK(lenient.current()->warnings().size() == 2);  // expired CA; server cert not signed by it
}

TEST_CASE("context: secrets readable by others are used, with a warning") {
  fs::path dir = copy_of("server");
  fs::permissions(dir / "server-key.pem", static_cast<fs::perms>(0644));
  ServerContext context(x509(dir));
  auto warnings = context.current()->warnings();
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0] == "server key '" + (dir / "server-key.pem").string() +
                           "' is readable by everyone (mode 644); it is a secret, run 'chmod 600 " +
                           (dir / "server-key.pem").string() + "'");
}

TEST_CASE("context: a server certificate the CA does not sign is a warning") {
  fs::path dir = copy_of("server");
  fs::copy_file(pki() / "rogue-cert.pem", dir / "ca-cert.pem", fs::copy_options::overwrite_existing);
  ServerContext context(x509(dir));
  REQUIRE(context.current()->warnings().size() == 1);
  CHECK(context.current()->warnings()[0].find("does not verify against") != std::string::npos);
}

TEST_CASE("context: unreadable files say so (not as root)") {
  if (::geteuid() == 0) return;  // root reads anything
  fs::path dir = copy_of("server");
  fs::permissions(dir / "server-key.pem", fs::perms::none);
  CHECK(startup_error(x509(dir)).find("cannot be read") != std::string::npos);
}

TEST_CASE("context: bad PSK files name the file and line") {
  fs::path dir = scratch_dir();
  auto error_for = [&](const std::string& text) {
    write_file(dir / "keys.psk", text);
    return startup_error(psk(dir / "keys.psk"));
  };
  std::string prefix = "--tls-psk '" + (dir / "keys.psk").string() + "' line ";
  CHECK(error_for("alice0011\n").starts_with(prefix + "1: no ':' between identity and key"));
  CHECK(error_for("alice:0011\n:0011\n").starts_with(prefix + "2: empty identity"));
  CHECK(error_for("alice:001\n").starts_with(prefix + "1: key of 'alice' has an odd number of hex digits"));
  CHECK(startup_error(psk(dir / "none.psk")) == "--tls-psk '" + (dir / "none.psk").string() + "': no such file");
  ServerConfig c = psk(pki() / "keys.psk");
  c.authz = "@" + (dir / "missing").string();
  CHECK(startup_error(c) == "--tls-authz '" + (dir / "missing").string() + "': no such file");
}
