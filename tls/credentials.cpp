#include "tls/credentials.hpp"

#include "tls/openssl_util.hpp"
#include "tls/record_session.hpp"
#include "tls/x509_files.hpp"
#include "util/log.hpp"

#include <fmt/format.h>

#include <openssl/ssl.h>
#include <openssl/tls1.h>

namespace fleece::tls {
namespace {

// TLS 1.2 suites: forward secrecy and AEAD for certificates; PSK suites only
// when PSK keys are configured (ECDHE/DHE first, plain PSK last, as GnuTLS
// clients with QEMU's or libnbd's priority strings offer them).
constexpr const char* kCipherList = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20";
constexpr const char* kPskCipherList =
    ":ECDHE-PSK-CHACHA20-POLY1305:DHE-PSK-AES256-GCM-SHA384:DHE-PSK-AES128-GCM-SHA256"
    ":DHE-PSK-CHACHA20-POLY1305:ECDHE-PSK-AES256-CBC-SHA384:ECDHE-PSK-AES128-CBC-SHA256"
    ":PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256:PSK-CHACHA20-POLY1305";
// TLS 1.3: an external PSK is bound to SHA-256 (GnuTLS's and OpenSSL's
// default), and OpenSSL skips a PSK whose hash differs from the suite it
// picked, so with PSK the SHA-256 suites must come first.
constexpr const char* kSuites = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256";
constexpr const char* kPskSuites = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384";

void free_identity(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<std::string*>(ptr);
}

int ctx_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

int identity_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_identity);
  return index;
}

int unknown_identity_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_identity);
  return index;
}

// Kept for the log line when the handshake then fails.
void remember_unknown(SSL* ssl, std::string_view identity) {
  delete static_cast<std::string*>(SSL_get_ex_data(ssl, unknown_identity_index()));
  SSL_set_ex_data(ssl, unknown_identity_index(), new std::string(identity));
}

void remember_identity(SSL* ssl, std::string identity) {
  delete static_cast<std::string*>(SSL_get_ex_data(ssl, identity_index()));
  SSL_set_ex_data(ssl, identity_index(), new std::string(std::move(identity)));
}

// TLS 1.3 external PSK: a session carrying the key, bound to SHA-256.
int find_psk_session(SSL* ssl, const unsigned char* id, size_t id_len, SSL_SESSION** out) {
  *out = nullptr;
  const Credentials* creds = Credentials::of(ssl);
  std::string_view identity(reinterpret_cast<const char*>(id), id_len);
  const std::vector<uint8_t>* key = creds && creds->psk() ? creds->psk()->find(identity) : nullptr;
  if (!key) {
    remember_unknown(ssl, identity);
    return 1;  // no session: the handshake goes on without PSK (and fails if nothing else fits)
  }
  static constexpr unsigned char kAes128GcmSha256[] = {0x13, 0x01};
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kAes128GcmSha256);
  ossl::SessionPtr session(SSL_SESSION_new());
  if (!cipher || !session || SSL_SESSION_set1_master_key(session.get(), key->data(), key->size()) != 1 ||
      SSL_SESSION_set_cipher(session.get(), cipher) != 1 ||
      SSL_SESSION_set_protocol_version(session.get(), TLS1_3_VERSION) != 1) {
    FLEECE_LOG_ERROR("tls", "cannot make a PSK session: {}", ossl::take_error());
    return 0;
  }
  remember_identity(ssl, std::string(identity));
  *out = session.release();
  return 1;
}

// TLS 1.2 PSK suites.
unsigned int psk_server(SSL* ssl, const char* identity, unsigned char* psk, unsigned int max_len) {
  const Credentials* creds = Credentials::of(ssl);
  const std::vector<uint8_t>* key = creds && creds->psk() && identity ? creds->psk()->find(identity) : nullptr;
  if (!key || key->size() > max_len) {
    remember_unknown(ssl, identity ? identity : "");
    return 0;
  }
  std::copy(key->begin(), key->end(), psk);
  remember_identity(ssl, identity);
  return static_cast<unsigned int>(key->size());
}

}  // namespace

Credentials::Credentials(const ServerConfig& config, uint64_t generation)
    : ssl_(boost::asio::ssl::context::tls_server), verify_peer_(config.verify_peer), generation_(generation) {
  if (config.creds_dir.empty() && config.psk_file.empty()) {
    throw ConfigError("TLS needs credentials: --tls-creds DIR (X.509) and/or --tls-psk FILE");
  }
  if (config.verify_peer && config.creds_dir.empty()) {
    throw ConfigError("--tls-verify-peer checks client certificates and needs --tls-creds DIR with ca-cert.pem");
  }
  SSL_CTX* ctx = ssl_.native_handle();
  SSL_CTX_set_ex_data(ctx, ctx_index(), this);
  configure_protocol();

  std::vector<std::string> parts;
  if (!config.creds_dir.empty()) {
    X509Files files = X509Files::load(config.creds_dir, config.verify_peer);
    files.install(ctx, config.verify_peer);
    has_x509_ = true;
    warnings_ = files.warnings;
    parts.push_back(fmt::format("x509 '{}'{}", ossl::name_to_string(X509_get_subject_name(files.cert.get())),
                                config.verify_peer ? " (client certificates required)" : ""));
  }
  if (!config.psk_file.empty()) {
    psk_ = PskKeys::load(config.psk_file);
    configure_psk();
    parts.push_back(fmt::format("psk ({} identit{})", psk_->size(), psk_->size() == 1 ? "y" : "ies"));
  }
  SSL_CTX_set_verify(ctx, config.verify_peer ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_NONE,
                     nullptr);
  if (!config.authz.empty()) {
    allow_ = AllowList::parse(config.authz);
    if (has_x509_ && !verify_peer_) {
      std::string w = "--tls-authz without --tls-verify-peer: X.509 clients are not asked for a certificate, "
                      "so only PSK identities can be allowed";
      FLEECE_LOG_WARN("tls", "{}", w);
      warnings_.push_back(std::move(w));
    }
    parts.push_back(fmt::format("authz: {} entr{}", allow_.patterns().size(), allow_.patterns().size() == 1 ? "y" : "ies"));
  }
  summary_ = fmt::format("{}", fmt::join(parts, ", "));
}

void Credentials::configure_protocol() {
  SSL_CTX* ctx = ssl_.native_handle();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // No resumption: NBD clients hold one long connection, and tickets would
  // outlive a reload of the credentials they were issued under. (Were a
  // ticket sent, RecordSession would leave sealing records to OpenSSL.)
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET |
                               SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  RecordSession::prepare_context(ctx);
  // Required by OpenSSL once client verification meets a PSK "session".
  static constexpr unsigned char kSessionContext[] = "fleece";
  SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
  if (SSL_CTX_set_cipher_list(ctx, kCipherList) != 1 || SSL_CTX_set_ciphersuites(ctx, kSuites) != 1) {
    throw ConfigError(fmt::format("TLS: setting cipher suites failed: {}", ossl::take_error()));
  }
}

void Credentials::configure_psk() {
  SSL_CTX* ctx = ssl_.native_handle();
  std::string list = std::string(kCipherList) + kPskCipherList;
  if (SSL_CTX_set_cipher_list(ctx, list.c_str()) != 1 || SSL_CTX_set_ciphersuites(ctx, kPskSuites) != 1) {
    throw ConfigError(fmt::format("TLS: setting PSK cipher suites failed: {}", ossl::take_error()));
  }
  SSL_CTX_set_psk_find_session_callback(ctx, find_psk_session);
  SSL_CTX_set_psk_server_callback(ctx, psk_server);
  if (!has_x509_) SSL_CTX_set_dh_auto(ctx, 1);
}

const Credentials* Credentials::of(const SSL* ssl) {
  return static_cast<const Credentials*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_index()));
}

const std::string* Credentials::psk_identity(const SSL* ssl) {
  return static_cast<const std::string*>(SSL_get_ex_data(ssl, identity_index()));
}

const std::string* Credentials::unknown_psk_identity(const SSL* ssl) {
  return static_cast<const std::string*>(SSL_get_ex_data(ssl, unknown_identity_index()));
}

}  // namespace fleece::tls
