// Internal to tls/: one generation of credentials (an SSL_CTX with
// everything its callbacks read). Opaque to the rest of fleece, which sees it
// through ServerContext::current() and tls/asio_stream.hpp.
#pragma once

#include "tls/allow_list.hpp"
#include "tls/config.hpp"
#include "tls/psk_keys.hpp"

#include <boost/asio/ssl/context.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace fleece::tls {

class Credentials {
 public:
  // Reads and checks every file named in config. Throws ConfigError.
  Credentials(const ServerConfig& config, uint64_t generation);
  Credentials(const Credentials&) = delete;
  Credentials& operator=(const Credentials&) = delete;

  // Asio's wrapper: ssl::stream's constructor wants a non-const context, but
  // only reads it (SSL_new takes its own reference to the SSL_CTX).
  boost::asio::ssl::context& asio() const { return ssl_; }
  const PskKeys* psk() const { return psk_ ? &*psk_ : nullptr; }
  const AllowList& allow() const { return allow_; }
  bool has_x509() const { return has_x509_; }
  bool verify_peer() const { return verify_peer_; }
  uint64_t generation() const { return generation_; }
  const std::string& summary() const { return summary_; }
  const std::vector<std::string>& warnings() const { return warnings_; }

  // The credentials an SSL object was made from (nullptr if not fleece's).
  static const Credentials* of(const SSL* ssl);
  // The PSK identity the client used in this connection's handshake, or nullptr.
  static const std::string* psk_identity(const SSL* ssl);
  // A PSK identity the client offered that has no key, or nullptr.
  static const std::string* unknown_psk_identity(const SSL* ssl);

 private:
  void configure_protocol();
  void configure_psk();

  mutable boost::asio::ssl::context ssl_;
  std::optional<PskKeys> psk_;
  AllowList allow_;
  bool has_x509_ = false;
  bool verify_peer_ = false;
  uint64_t generation_ = 0;
  std::string summary_;
  std::vector<std::string> warnings_;
};

}  // namespace fleece::tls
