// TLS settings of the server, as given on the command line, and the error
// that reports a credential that cannot be used.
//
//   --tls-creds DIR    X.509 directory in QEMU's layout (see x509_files.hpp)
//   --tls-psk FILE     psktool's "identity:hexkey" lines (see psk_keys.hpp)
//   --tls-verify-peer  X.509 clients must present a certificate signed by
//                      DIR/ca-cert.pem
//   --tls-authz LIST   who may connect once the handshake succeeded
//                      (see allow_list.hpp for the syntax)
//
// Whether TLS is off, offered or required is the NBD layer's business
// (nbd::TlsMode); this layer only knows how to run and judge a handshake.
#pragma once

#include <stdexcept>
#include <string>

namespace fleece::tls {

struct ServerConfig {
  std::string creds_dir;  // empty: no X.509 certificate (PSK only)
  std::string psk_file;   // empty: no PSK
  bool verify_peer = false;
  std::string authz;      // empty: whoever completes the handshake
};

// A credential or setting that cannot be used. what() is one line naming the
// file and what to do about it; the server shows it and exits at start-up, or
// logs it and keeps the previous credentials on reload.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace fleece::tls
