// RecordSealer: TLS 1.3 protection of the records the server sends
// (RFC 8446 §5.2-5.3), keyed from a traffic secret (§7.1, §7.3), with the
// key update of §7.2.
//
//   auto sealer = RecordSealer::make(0x1302, server_application_secret);
//   sealer->seal(kApplicationData, pieces, out);  // appends whole records to out
//   sealer->seal(kHandshake, key_update, out); sealer->update_keys();
//
// Why not SSL_write: OpenSSL copies the plaintext into its record buffer,
// encrypts it there, and its BIO copies the records out again. Sealed here,
// bytes are encrypted from the caller's buffers straight into the output:
// two copies of every byte fewer. OpenSSL keeps the handshake, the read side
// and TLS 1.2 (see tls/record_session.cpp for how the two share a session).
//
// After kRecordsPerKey records under one key the sealer sends a KeyUpdate
// of its own and moves to the next key: AES-GCM keys must not protect more
// than 2^24.5 full records (§5.5), about 380 GiB, less than a large disk.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "util/byte_buffer.hpp"

struct evp_cipher_ctx_st;

namespace fleece::tls {

class RecordSealer {
 public:
  using Piece = std::span<const uint8_t>;
  static constexpr uint8_t kAlert = 21;
  static constexpr uint8_t kHandshake = 22;
  static constexpr uint8_t kApplicationData = 23;
  static constexpr uint64_t kRecordsPerKey = uint64_t{1} << 24;
  static constexpr size_t kMaxRecordData = 16 * 1024;
  static constexpr size_t kRecordOverhead = 5 + 1 + 16;  // header, content type, tag
  struct Suite;  // the cipher and hash of a TLS 1.3 suite

  // Null when `suite` (the IANA number: 0x1301 TLS_AES_128_GCM_SHA256,
  // 0x1302 TLS_AES_256_GCM_SHA384, 0x1303 TLS_CHACHA20_POLY1305_SHA256) is
  // not one sealed here, or the secret does not fit it.
  static std::unique_ptr<RecordSealer> make(uint16_t suite, std::span<const uint8_t> traffic_secret,
                                            uint64_t records_per_key = kRecordsPerKey);
  ~RecordSealer();
  RecordSealer(const RecordSealer&) = delete;
  RecordSealer& operator=(const RecordSealer&) = delete;

  // Appends the pieces' bytes as records of at most 16 KiB, each with inner
  // content type `type`. False if the cipher failed (nothing usable appended).
  bool seal(uint8_t type, std::span<const Piece> pieces, ByteBuffer& out);
  bool seal(uint8_t type, Piece bytes, ByteBuffer& out) { return seal(type, std::span<const Piece>(&bytes, 1), out); }

  // Moves to the next traffic secret: call after sealing a KeyUpdate.
  bool update_keys();

 private:
  RecordSealer(const Suite& suite, std::span<const uint8_t> secret, uint64_t records_per_key);
  bool derive_keys();
  bool seal_record(uint8_t type, size_t length, std::span<const Piece>& pieces, size_t& offset, uint8_t* out);

  const Suite& suite_;
  evp_cipher_ctx_st* ctx_ = nullptr;
  std::vector<uint8_t> secret_;
  uint8_t iv_[12] = {};
  uint64_t sequence_ = 0;  // records sealed under the current key
  uint64_t records_per_key_;
};

// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context; `digest` is an
// OpenSSL digest name ("SHA256", "SHA384"). Exposed for its unit test.
bool hkdf_expand_label(const char* digest, std::span<const uint8_t> secret, const char* label,
                       std::span<uint8_t> out);

}  // namespace fleece::tls
