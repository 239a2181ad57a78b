#include "tls/asio_stream.hpp"
#include "tls/credentials.hpp"
#include "tls/openssl_util.hpp"

#include <fmt/format.h>

namespace fleece::tls {

Authorization authorize(const SSL* ssl) {
  Authorization verdict;
  PeerIdentity& peer = verdict.peer;
  peer.protocol = SSL_get_version(ssl);
  if (const SSL_CIPHER* c = SSL_get_current_cipher(ssl)) peer.cipher = SSL_CIPHER_get_name(c);
  const Credentials* creds = Credentials::of(ssl);
  if (!creds) {
    verdict.reason = "not a fleece TLS context";
    return verdict;
  }
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  // The identity is recorded when a key was looked up; it counts only if the
  // handshake really used it (a TLS 1.3 PSK, or a TLS 1.2 PSK suite).
  bool used_psk = (SSL_version(ssl) == TLS1_3_VERSION && SSL_session_reused(ssl)) ||
                  (cipher && SSL_CIPHER_get_auth_nid(cipher) == NID_auth_psk);
  if (const std::string* identity = Credentials::psk_identity(ssl); identity && used_psk) {
    peer.kind = PeerIdentity::Kind::psk;
    peer.name = *identity;
  } else if (X509* cert = SSL_get0_peer_certificate(ssl);
             cert && creds->verify_peer() && SSL_get_verify_result(ssl) == X509_V_OK) {
    // Only a verified certificate names anyone; without --tls-verify-peer
    // none is requested.
    peer.kind = PeerIdentity::Kind::x509;
    peer.name = ossl::name_to_string(X509_get_subject_name(cert));
  }
  if (!creds->allow().restricts()) {
    verdict.allowed = true;
  } else if (peer.kind == PeerIdentity::Kind::none) {
    verdict.reason = "--tls-authz is set and the client showed no identity (no verified certificate, no PSK)";
  } else if (creds->allow().allows(peer.name)) {
    verdict.allowed = true;
  } else {
    verdict.reason = fmt::format("'{}' is not in --tls-authz", peer.name);
  }
  return verdict;
}

std::string describe_handshake_failure(const SSL* ssl, const boost::system::error_code& ec) {
  std::string text = ec.message();
  if (ssl) {
    long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) text += fmt::format(" ({})", X509_verify_cert_error_string(verify));
    if (const std::string* unknown = Credentials::unknown_psk_identity(ssl)) {
      text += fmt::format(" (PSK identity '{}' is not in --tls-psk)", *unknown);
    }
  }
  ERR_clear_error();
  return text;
}

}  // namespace fleece::tls
