#include "tls/config.hpp"
#include "tls/psk_keys.hpp"

#include <doctest/doctest.h>

#include <string>

using fleece::tls::ConfigError;
using fleece::tls::PskKeys;

namespace {

std::string error_of(std::string_view text) {
  try {
    PskKeys::parse(text, "keys.psk");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("psk: psktool lines give identity and key bytes") {
  auto keys = PskKeys::parse("# made by psktool\nalice:00ff10Ab\r\n\nbob:0102\n", "keys.psk");
  CHECK(keys.size() == 2);
  REQUIRE(keys.find("alice"));
  CHECK(*keys.find("alice") == std::vector<uint8_t>{0x00, 0xff, 0x10, 0xab});
  CHECK(*keys.find("bob") == std::vector<uint8_t>{0x01, 0x02});
  CHECK(keys.find("carol") == nullptr);
  CHECK(keys.find("alic") == nullptr);
}

TEST_CASE("psk: every bad line is named with its line number") {
  CHECK(error_of("alice:0102\nbob0102\n") ==
        "keys.psk line 2: no ':' between identity and key (expected identity:hexkey, as psktool writes)");
  CHECK(error_of(":0102\n") == "keys.psk line 1: empty identity (expected identity:hexkey, as psktool writes)");
  CHECK(error_of("alice:012\n") ==
        "keys.psk line 1: key of 'alice' has an odd number of hex digits (3) (expected identity:hexkey, as psktool "
        "writes)");
  CHECK(error_of("alice:01zz\n").starts_with("keys.psk line 1: key of 'alice' has a character that is not a hex digit"));
  CHECK(error_of("alice:\n").starts_with("keys.psk line 1: empty key for 'alice'"));
  CHECK(error_of("alice:01\nalice:02\n").starts_with("keys.psk line 2: identity 'alice' appears twice"));
  CHECK(error_of("alice:" + std::string(1026, 'a')).starts_with("keys.psk line 1: key of 'alice' is longer than 512"));
  CHECK(error_of(std::string(257, 'x') + ":01").starts_with("keys.psk line 1: identity longer than 256 bytes"));
  CHECK(error_of("# nothing\n\n").starts_with("keys.psk: no keys"));
}

TEST_CASE("psk: a missing file is named") {
  try {
    PskKeys::load("/nonexistent/keys.psk");
    FAIL("no error");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()) == "--tls-psk '/nonexistent/keys.psk': no such file");
  }
}
