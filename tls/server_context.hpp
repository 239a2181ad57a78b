// ServerContext: the server's TLS credentials, checked at start-up and
// reloadable while connections run.
//
//   tls::ServerContext tls(config);           // throws ConfigError
//   auto creds = tls.current();               // one per new connection
//   ... STARTTLS: see tls/asio_stream.hpp ...
//   tls.reload();                             // SIGHUP: new files for new connections
//
// Construction reads and checks every file (see x509_files.hpp, psk_keys.hpp,
// allow_list.hpp) and builds one OpenSSL context: TLS 1.3 preferred, 1.2
// allowed, nothing older; X.509 with optional client verification; external
// PSK for TLS 1.3 (SHA-256, as GnuTLS clients send it) and PSK cipher suites
// for TLS 1.2. Problems that do not stop TLS from working (a private key
// readable by others, a server certificate the CA does not sign) are logged
// as warnings.
//
// current() hands out the context generation new connections must use.
// reload() builds a new generation from the same paths; on success it
// replaces the current one, connections already running keep theirs (they
// hold a shared_ptr); on failure the current one stays and the error is
// returned. Both are thread-safe.
//
// OpenSSL and Asio's ssl headers stay out of this header: Credentials is
// opaque here and opened up by tls/asio_stream.hpp, which only the
// connection code includes.
#pragma once

#include "tls/config.hpp"

#include <cstdint>
#include <memory>
#include <string>

namespace fleece::tls {

// One generation of credentials: an SSL_CTX and what its callbacks read.
class Credentials;

// Who is on the other side of a finished handshake.
struct PeerIdentity {
  enum class Kind { none, x509, psk };
  Kind kind = Kind::none;
  std::string name;      // verified subject DN (RFC 4514) or PSK identity
  std::string protocol;  // "TLSv1.3"
  std::string cipher;    // "TLS_AES_256_GCM_SHA384"
  std::string describe() const;  // "x509 'CN=a,O=b'", "psk 'alice'", "anonymous"
};

struct ReloadOutcome {
  bool ok = false;
  std::string message;      // the error, or what was loaded
  uint64_t generation = 0;  // of the current credentials after the call
};

class ServerContext {
 public:
  explicit ServerContext(ServerConfig config);  // throws ConfigError
  ~ServerContext();
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  std::shared_ptr<const Credentials> current() const;
  ReloadOutcome reload();

  const ServerConfig& config() const;
  uint64_t generation() const;
  // A one-line summary for the start-up log ("x509 (verify-peer) + psk (2 keys), authz: 3 entries").
  std::string describe() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fleece::tls
