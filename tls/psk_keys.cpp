#include "tls/psk_keys.hpp"

#include "tls/config.hpp"
#include "tls/credential_file.hpp"

#include <fmt/format.h>

namespace fleece::tls {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

PskKeys PskKeys::parse(std::string_view text, std::string_view source) {
  PskKeys keys;
  size_t line_no = 0;
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    auto fail = [&](std::string_view why) {
      throw ConfigError(fmt::format("{} line {}: {} (expected identity:hexkey, as psktool writes)",
                                    source, line_no, why));
    };
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) fail("no ':' between identity and key");
    std::string_view identity = line.substr(0, colon);
    std::string_view hex = line.substr(colon + 1);
    if (identity.empty()) fail("empty identity");
    if (identity.size() > kMaxIdentityBytes) fail(fmt::format("identity longer than {} bytes", kMaxIdentityBytes));
    if (hex.empty()) fail(fmt::format("empty key for '{}'", identity));
    if (hex.size() % 2) fail(fmt::format("key of '{}' has an odd number of hex digits ({})", identity, hex.size()));
    if (hex.size() / 2 > kMaxKeyBytes) fail(fmt::format("key of '{}' is longer than {} bytes", identity, kMaxKeyBytes));
    std::vector<uint8_t> key(hex.size() / 2);
    for (size_t i = 0; i < key.size(); ++i) {
      int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
      if (hi < 0 || lo < 0) fail(fmt::format("key of '{}' has a character that is not a hex digit", identity));
      key[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    if (keys.keys_.contains(identity)) fail(fmt::format("identity '{}' appears twice", identity));
    keys.keys_.emplace(std::string(identity), std::move(key));
  }
  if (keys.keys_.empty()) throw ConfigError(fmt::format("{}: no keys (make one with 'psktool -u NAME -p {}')", source, source));
  return keys;
}

PskKeys PskKeys::load(const std::string& path) {
  std::string text = read_credential_file(path, "--tls-psk");
  warn_if_exposed(path, "PSK file");
  return parse(text, fmt::format("--tls-psk '{}'", path));
}

const std::vector<uint8_t>* PskKeys::find(std::string_view identity) const {
  auto it = keys_.find(identity);
  return it == keys_.end() ? nullptr : &it->second;
}

}  // namespace fleece::tls
