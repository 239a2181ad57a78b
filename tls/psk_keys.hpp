// Pre-shared keys in the format of GnuTLS's psktool (also read by libnbd's
// tls-psk-file and QEMU's tls-creds-psk keys.psk):
//
//   alice:8d4f...e2      one "identity:hexkey" per line
//
// The identity ends at the first ':'; the key is an even number of hex digits
// (1 to 512 bytes). Blank lines and lines starting with '#' are skipped; a
// trailing '\r' is ignored. Any other deviation is an error naming the file
// and the line, so a typo never silently locks a client out.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace fleece::tls {

class PskKeys {
 public:
  static constexpr size_t kMaxKeyBytes = 512;       // OpenSSL's PSK_MAX_PSK_LEN
  static constexpr size_t kMaxIdentityBytes = 256;  // OpenSSL's PSK_MAX_IDENTITY_LEN

  // Parses the text of a keys file; `source` names it in error messages.
  // Throws ConfigError.
  static PskKeys parse(std::string_view text, std::string_view source);
  // Reads and parses a file. Throws ConfigError (missing, unreadable, bad line).
  static PskKeys load(const std::string& path);

  // The key of an identity, or nullptr.
  const std::vector<uint8_t>* find(std::string_view identity) const;
  size_t size() const { return keys_.size(); }

 private:
  std::map<std::string, std::vector<uint8_t>, std::less<>> keys_;
};

}  // namespace fleece::tls
