#include "tls/record_sealer.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace fleece::tls {

struct RecordSealer::Suite {
  uint16_t id;
  const char* cipher;  // OpenSSL names
  const char* digest;
  size_t key_size;
  size_t secret_size;  // the digest's output
};

namespace {

constexpr RecordSealer::Suite kSuites[] = {
    {0x1301, "AES-128-GCM", "SHA256", 16, 32},
    {0x1302, "AES-256-GCM", "SHA384", 32, 48},
    {0x1303, "ChaCha20-Poly1305", "SHA256", 32, 32},
};
constexpr size_t kIvSize = 12;
constexpr size_t kTagSize = 16;

// The KeyUpdate message we send on our own: update_not_requested (§4.6.3).
constexpr uint8_t kKeyUpdate[] = {24, 0, 0, 1, 0};

}  // namespace

bool hkdf_expand_label(const char* digest, std::span<const uint8_t> secret, const char* label,
                       std::span<uint8_t> out) {
  // struct HkdfLabel { uint16 length; opaque label<7..255>; opaque context<0..255>; }
  std::string full = std::string("tls13 ") + label;
  std::vector<uint8_t> info;
  info.push_back(static_cast<uint8_t>(out.size() >> 8));
  info.push_back(static_cast<uint8_t>(out.size()));
  info.push_back(static_cast<uint8_t>(full.size()));
  info.insert(info.end(), full.begin(), full.end());
  info.push_back(0);  // empty context

  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  EVP_KDF_CTX* ctx = kdf ? EVP_KDF_CTX_new(kdf) : nullptr;
  int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>(digest), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(secret.data()), secret.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
      OSSL_PARAM_construct_end(),
  };
  bool ok = ctx && EVP_KDF_derive(ctx, out.data(), out.size(), params) == 1;
  EVP_KDF_CTX_free(ctx);
  EVP_KDF_free(kdf);
  return ok;
}

std::unique_ptr<RecordSealer> RecordSealer::make(uint16_t suite, std::span<const uint8_t> traffic_secret,
                                                 uint64_t records_per_key) {
  const Suite* found = std::find_if(std::begin(kSuites), std::end(kSuites), [&](const Suite& s) { return s.id == suite; });
  if (found == std::end(kSuites) || traffic_secret.size() != found->secret_size || records_per_key == 0) return nullptr;
  std::unique_ptr<RecordSealer> sealer(new RecordSealer(*found, traffic_secret, records_per_key));
  if (!sealer->ctx_ || !sealer->derive_keys()) return nullptr;
  return sealer;
}

RecordSealer::RecordSealer(const Suite& suite, std::span<const uint8_t> secret, uint64_t records_per_key)
    : suite_(suite), ctx_(EVP_CIPHER_CTX_new()), secret_(secret.begin(), secret.end()),
      records_per_key_(records_per_key) {}

RecordSealer::~RecordSealer() {
  EVP_CIPHER_CTX_free(ctx_);
  OPENSSL_cleanse(secret_.data(), secret_.size());
  OPENSSL_cleanse(iv_, sizeof iv_);
}

bool RecordSealer::derive_keys() {
  uint8_t key[32];
  EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, suite_.cipher, nullptr);
  bool ok = cipher && hkdf_expand_label(suite_.digest, secret_, "key", {key, suite_.key_size}) &&
            hkdf_expand_label(suite_.digest, secret_, "iv", {iv_, kIvSize}) &&
            EVP_EncryptInit_ex(ctx_, cipher, nullptr, key, nullptr) == 1;
  EVP_CIPHER_free(cipher);
  OPENSSL_cleanse(key, sizeof key);
  sequence_ = 0;
  return ok;
}

bool RecordSealer::update_keys() {
  std::vector<uint8_t> next(secret_.size());
  if (!hkdf_expand_label(suite_.digest, secret_, "traffic upd", next)) return false;
  OPENSSL_cleanse(secret_.data(), secret_.size());
  secret_ = std::move(next);
  return derive_keys();
}

bool RecordSealer::seal(uint8_t type, std::span<const Piece> pieces, ByteBuffer& out) {
  size_t total = 0;
  for (const Piece& p : pieces) total += p.size();
  size_t start = out.size();
  size_t offset = 0;  // into pieces.front()
  while (total > 0) {
    if (sequence_ == records_per_key_) {
      Piece update(kKeyUpdate);
      std::span<const Piece> one(&update, 1);
      size_t at = out.size(), zero = 0;
      out.resize(at + sizeof kKeyUpdate + kRecordOverhead);
      if (!seal_record(kHandshake, sizeof kKeyUpdate, one, zero, out.data() + at) || !update_keys()) break;
    }
    size_t length = std::min(total, kMaxRecordData);
    size_t at = out.size();
    out.resize(at + length + kRecordOverhead);
    if (!seal_record(type, length, pieces, offset, out.data() + at)) break;
    total -= length;
  }
  if (total == 0) return true;
  out.resize(start);
  return false;
}

// One record of `length` bytes taken from the front of `pieces` (advancing
// it and `offset`), written whole at `out`.
bool RecordSealer::seal_record(uint8_t type, size_t length, std::span<const Piece>& pieces, size_t& offset,
                               uint8_t* out) {
  const size_t sealed = length + 1 + kTagSize;
  out[0] = kApplicationData;  // the outer type of every protected record
  out[1] = 0x03;
  out[2] = 0x03;
  out[3] = static_cast<uint8_t>(sealed >> 8);
  out[4] = static_cast<uint8_t>(sealed);

  uint8_t nonce[kIvSize];
  std::memcpy(nonce, iv_, kIvSize);
  for (int i = 0; i < 8; ++i) nonce[kIvSize - 1 - i] ^= static_cast<uint8_t>(sequence_ >> (8 * i));
  ++sequence_;

  int n = 0;
  uint8_t* dst = out + 5;
  if (EVP_EncryptInit_ex(ctx_, nullptr, nullptr, nullptr, nonce) != 1 ||
      EVP_EncryptUpdate(ctx_, nullptr, &n, out, 5) != 1) {
    return false;
  }
  while (length > 0) {
    const Piece& piece = pieces.front();
    size_t take = std::min(length, piece.size() - offset);
    if (EVP_EncryptUpdate(ctx_, dst, &n, piece.data() + offset, static_cast<int>(take)) != 1) return false;
    dst += take;
    length -= take;
    offset += take;
    if (offset == piece.size()) {
      pieces = pieces.subspan(1);
      offset = 0;
    }
  }
  if (EVP_EncryptUpdate(ctx_, dst, &n, &type, 1) != 1 || EVP_EncryptFinal_ex(ctx_, dst + 1, &n) != 1) return false;
  return EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_GET_TAG, kTagSize, dst + 1) == 1;
}

}  // namespace fleece::tls
