// RecordSealer and the RecordSession that uses it, against an OpenSSL client
// over memory BIOs: every byte we seal must open in a TLS stack we did not
// write, across suites, our own key updates, the peer's, and close_notify.
#include "tls/record_sealer.hpp"
#include "tls/record_session.hpp"
#include "tls_test_support.hpp"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>

#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

using namespace fleece::tls;
using namespace fleece::tls::test;

namespace {

// HKDF-Expand-Label computed by OpenSSL's own TLS 1.3 KDF (a separate code
// path from ours, which builds the HkdfLabel itself and runs plain HKDF).
std::vector<uint8_t> openssl_expand_label(const char* digest, const std::vector<uint8_t>& secret, const char* label,
                                          size_t n) {
  std::vector<uint8_t> out(n);
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "TLS13-KDF", nullptr);
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
  static char prefix[] = "tls13 ";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>(digest), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(secret.data()), secret.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PREFIX, prefix, 6),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_LABEL, const_cast<char*>(label), strlen(label)),
      OSSL_PARAM_construct_end(),
  };
  REQUIRE(EVP_KDF_derive(ctx, out.data(), out.size(), params) == 1);
  EVP_KDF_CTX_free(ctx);
  EVP_KDF_free(kdf);
  return out;
}

std::vector<uint8_t> pattern(size_t n, int seed) {
  std::vector<uint8_t> bytes(n);
  for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<uint8_t>(i * 31 + seed * 7 + (i >> 9));
  return bytes;
}

// A RecordSession and an OpenSSL client joined by memory BIOs.
struct Pair {
  ServerContext context{x509(pki() / "server")};
  std::shared_ptr<const Credentials> credentials = context.current();
  RecordSession server{*credentials};
  SSL_CTX* client_ctx = SSL_CTX_new(TLS_client_method());
  SSL* client = nullptr;
  BIO* to_client = BIO_new(BIO_s_mem());    // the client reads the server's output here
  BIO* from_client = BIO_new(BIO_s_mem());  // and writes here
  int key_updates_received = 0;              // by the client

  explicit Pair(const std::string& suites = "", bool tls12 = false) {
    if (tls12) SSL_CTX_set_max_proto_version(client_ctx, TLS1_2_VERSION);
    if (!suites.empty()) REQUIRE(SSL_CTX_set_ciphersuites(client_ctx, suites.c_str()) == 1);
    SSL_CTX_set_msg_callback(client_ctx, [](int write_p, int, int type, const void* buf, size_t len, SSL*, void* arg) {
      if (!write_p && type == SSL3_RT_HANDSHAKE && len > 0 && static_cast<const uint8_t*>(buf)[0] == SSL3_MT_KEY_UPDATE)
        ++*static_cast<int*>(arg);
    });
    SSL_CTX_set_msg_callback_arg(client_ctx, &key_updates_received);
    client = SSL_new(client_ctx);
    SSL_set_bio(client, to_client, from_client);
    SSL_set_connect_state(client);
  }
  ~Pair() {
    SSL_free(client);
    SSL_CTX_free(client_ctx);
  }

  // Moves bytes both ways until neither side has any to give.
  void pump() {
    for (bool moved = true; moved;) {
      moved = false;
      char buf[32 * 1024];
      int n;
      while ((n = BIO_read(from_client, buf, sizeof buf)) > 0) {
        auto space = server.input_space();
        REQUIRE(space.size() >= static_cast<size_t>(n));
        std::memcpy(space.data(), buf, n);
        server.commit_input(n);
        moved = true;
      }
      if (server.has_output()) {
        fleece::ByteBuffer out;
        server.take_output(out);
        REQUIRE(BIO_write(to_client, out.data(), static_cast<int>(out.size())) == static_cast<int>(out.size()));
        moved = true;
      }
    }
  }

  void handshake() {
    RecordSession::Status status = RecordSession::Status::need_input;
    for (int i = 0; i < 20 && (status != RecordSession::Status::ok || !SSL_is_init_finished(client)); ++i) {
      SSL_do_handshake(client);
      pump();
      status = server.handshake();
      pump();
    }
    REQUIRE(status == RecordSession::Status::ok);
    REQUIRE(SSL_is_init_finished(client));
  }

  bool send(const std::vector<RecordSession::Piece>& pieces) {
    bool ok = server.encrypt(pieces);
    pump();
    return ok;
  }

  // Everything the client can read now.
  std::vector<uint8_t> client_read() {
    std::vector<uint8_t> got;
    uint8_t buf[16 * 1024];
    size_t n = 0;
    while (SSL_read_ex(client, buf, sizeof buf, &n) == 1) got.insert(got.end(), buf, buf + n);
    pump();  // what the client wrote while reading
    return got;
  }

  std::string server_read() {
    std::string got(64 * 1024, '\0');
    size_t n = 0;
    server.decrypt(got.data(), got.size(), n);
    pump();
    got.resize(n);
    return got;
  }
};

}  // namespace

TEST_CASE("record sealer: HKDF-Expand-Label agrees with OpenSSL's TLS 1.3 KDF") {
  auto secret = pattern(48, 1);
  for (const char* label : {"key", "iv", "traffic upd"}) {
    for (size_t n : {12, 16, 32, 48}) {
      std::vector<uint8_t> ours(n);
      REQUIRE(hkdf_expand_label("SHA384", secret, label, ours));
      CHECK(ours == openssl_expand_label("SHA384", secret, label, n));
    }
  }
}

TEST_CASE("record sealer: refuses suites and secrets it does not seal") {
  CHECK(RecordSealer::make(0x1301, pattern(32, 0)) != nullptr);
  CHECK(RecordSealer::make(0x1302, pattern(48, 0)) != nullptr);
  CHECK(RecordSealer::make(0x1303, pattern(32, 0)) != nullptr);
  CHECK(RecordSealer::make(0x1304, pattern(32, 0)) == nullptr);  // AES-128-CCM
  CHECK(RecordSealer::make(0x1302, pattern(32, 0)) == nullptr);  // SHA-384 suite, SHA-256-sized secret
}

TEST_CASE("record session: TLS 1.3 records sealed here open in OpenSSL, byte for byte, for every suite") {
  for (const char* suite : {"TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"}) {
    CAPTURE(suite);
    Pair pair(suite);
    pair.handshake();
    REQUIRE(pair.server.seals_records());
    CHECK(SSL_CIPHER_get_name(SSL_get_current_cipher(pair.client)) == std::string(suite));

    // Pieces smaller than a record, across records, empty, and whole records.
    auto a = pattern(3, 1), b = pattern(40000, 2), c = pattern(0, 3), d = pattern(17, 4), e = pattern(32768, 5);
    std::vector<uint8_t> want;
    for (auto* v : {&a, &b, &c, &d, &e}) want.insert(want.end(), v->begin(), v->end());
    REQUIRE(pair.send({a, b, c, d, e}));
    CHECK(pair.client_read() == want);

    // And the other way, through OpenSSL's read side.
    REQUIRE(SSL_write(pair.client, "ping", 4) == 4);
    pair.pump();
    CHECK(pair.server_read() == "ping");
  }
}

TEST_CASE("record session: our key updates every n records, and the peer's requested ones, keep the stream open") {
  Pair pair;
  pair.server.set_records_per_key(3);
  pair.handshake();
  REQUIRE(pair.server.seals_records());

  std::vector<uint8_t> want, got;
  for (int round = 0; round < 4; ++round) {
    auto bytes = pattern(5 * 16 * 1024 + 100, round);  // 6 records
    want.insert(want.end(), bytes.begin(), bytes.end());
    REQUIRE(pair.send({bytes}));
    auto read = pair.client_read();
    got.insert(got.end(), read.begin(), read.end());
  }
  CHECK(got == want);
  int ours = pair.key_updates_received;
  CHECK(ours == 7);  // 24 records, a new key before records 4, 7, ... 22

  // The client asks for an update: the answer is sealed before our next data.
  REQUIRE(SSL_key_update(pair.client, SSL_KEY_UPDATE_REQUESTED) == 1);
  REQUIRE(SSL_write(pair.client, "next", 4) == 4);
  pair.pump();
  CHECK(pair.server_read() == "next");
  auto more = pattern(1000, 9);
  REQUIRE(pair.send({more}));
  CHECK(pair.client_read() == more);
  // Two more: ours, due since record 24 was the third under its key, then
  // the answer.
  CHECK(pair.key_updates_received == ours + 2);
}

TEST_CASE("record session: close_notify is sealed too") {
  Pair pair;
  pair.handshake();
  REQUIRE(pair.server.seals_records());
  auto bytes = pattern(100, 1);
  REQUIRE(pair.send({bytes}));
  pair.server.close_notify();
  pair.pump();
  CHECK(pair.client_read() == bytes);
  uint8_t buf[16];
  size_t n = 0;
  CHECK(SSL_read_ex(pair.client, buf, sizeof buf, &n) == 0);
  CHECK(SSL_get_error(pair.client, 0) == SSL_ERROR_ZERO_RETURN);
}

TEST_CASE("record session: TLS 1.2 stays with OpenSSL's records") {
  Pair pair("", /*tls12=*/true);
  pair.handshake();
  CHECK_FALSE(pair.server.seals_records());
  auto a = pattern(10, 1), b = pattern(70000, 2);
  std::vector<uint8_t> want(a);
  want.insert(want.end(), b.begin(), b.end());
  REQUIRE(pair.send({a, b}));
  CHECK(pair.client_read() == want);
}
