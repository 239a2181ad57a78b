// The fixed newstyle greeting and the option header, encoded and decoded.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace fleece::nbd {

inline constexpr size_t kGreetingSize = 18;      // NBDMAGIC, IHAVEOPT, handshake flags
inline constexpr size_t kClientFlagsSize = 4;
inline constexpr size_t kOptionHeaderSize = 16;  // IHAVEOPT, option, length

std::array<uint8_t, kGreetingSize> encode_greeting();

struct OptionHeader {
  uint32_t option = 0;
  uint32_t length = 0;
};
// nullopt when the magic is not IHAVEOPT (the connection must be dropped).
std::optional<OptionHeader> decode_option_header(std::span<const uint8_t, kOptionHeaderSize> in);

// One option reply: magic, option, reply type, length, then data.
std::vector<uint8_t> encode_option_reply(uint32_t option, uint32_t reply_type,
                                         std::span<const uint8_t> data = {});

}  // namespace fleece::nbd
