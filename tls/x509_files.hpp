// Internal to tls/: the X.509 directory in QEMU's layout, read and checked.
//
//   DIR/ca-cert.pem      CA(s) that sign client certificates; required with
//                        --tls-verify-peer, optional otherwise
//   DIR/server-cert.pem  the server certificate, optionally followed by
//                        intermediate certificates (required)
//   DIR/server-key.pem   its private key, unencrypted PEM (required)
//   DIR/dh-params.pem    Diffie-Hellman parameters (optional; OpenSSL picks
//                        built-in ones otherwise)
//   DIR/ca-crl.pem       revoked client certificates (optional)
//
// load() refuses, with one line naming the file: a missing or unreadable
// file, a file that holds no PEM object of the expected kind, an encrypted
// key, a key that does not belong to the certificate, a certificate that is
// expired or not yet valid, a CA that is missing or expired under
// --tls-verify-peer. It warns (and goes on) about a key readable by others
// and a server certificate that ca-cert.pem does not sign.
#pragma once

#include "tls/openssl_util.hpp"

#include <string>
#include <vector>

namespace fleece::tls {

struct X509Files {
  ossl::X509Ptr cert;
  std::vector<ossl::X509Ptr> chain;  // intermediates after the leaf
  ossl::PkeyPtr key;
  std::vector<ossl::X509Ptr> ca;
  std::vector<ossl::X509CrlPtr> crls;
  ossl::PkeyPtr dh;
  std::vector<std::string> warnings;

  static X509Files load(const std::string& dir, bool verify_peer);  // throws ConfigError
  // Puts certificate, key, CAs, CRLs and DH parameters into ctx. Throws ConfigError.
  void install(SSL_CTX* ctx, bool verify_peer) const;
};

}  // namespace fleece::tls
