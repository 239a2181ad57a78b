// The fixed newstyle greeting and option framing (see handshake.hpp).
#include "nbd/handshake.hpp"

#include "nbd/constants.hpp"
#include "nbd/wire.hpp"

namespace fleece::nbd {

std::array<uint8_t, kGreetingSize> encode_greeting() {
  std::array<uint8_t, kGreetingSize> out{};
  wire::store64(out.data(), kNbdMagic);
  wire::store64(out.data() + 8, kIHaveOpt);
  wire::store16(out.data() + 16, kFlagFixedNewstyle | kFlagNoZeroes);
  return out;
}

std::optional<OptionHeader> decode_option_header(std::span<const uint8_t, kOptionHeaderSize> in) {
  if (wire::load64(in.data()) != kIHaveOpt) return std::nullopt;
  return OptionHeader{wire::load32(in.data() + 8), wire::load32(in.data() + 12)};
}

std::vector<uint8_t> encode_option_reply(uint32_t option, uint32_t reply_type,
                                         std::span<const uint8_t> data) {
  std::vector<uint8_t> out(20 + data.size());
  wire::store64(out.data(), kOptReplyMagic);
  wire::store32(out.data() + 8, option);
  wire::store32(out.data() + 12, reply_type);
  wire::store32(out.data() + 16, uint32_t(data.size()));
  if (!data.empty()) std::memcpy(out.data() + 20, data.data(), data.size());
  return out;
}

}  // namespace fleece::nbd
