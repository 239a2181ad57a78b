// Transmission-phase replies: simple replies and structured reply chunks.
//
// Fixed-size headers are written into caller storage (no allocation on the
// hot path); variable chunks return a vector.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace fleece::nbd {

inline constexpr size_t kSimpleReplySize = 16;
inline constexpr size_t kChunkHeaderSize = 20;
inline constexpr size_t kOffsetDataPrefixSize = kChunkHeaderSize + 8;
inline constexpr size_t kOffsetHoleSize = kChunkHeaderSize + 12;

void encode_simple_reply(std::span<uint8_t, kSimpleReplySize> out, uint64_t cookie, uint32_t error);

void encode_chunk_header(std::span<uint8_t, kChunkHeaderSize> out, uint16_t flags, uint16_t type,
                         uint64_t cookie, uint32_t length);

// OFFSET_DATA chunk header and offset; data_length bytes of data follow.
void encode_offset_data_prefix(std::span<uint8_t, kOffsetDataPrefixSize> out, uint16_t flags,
                               uint64_t cookie, uint64_t offset, uint32_t data_length);

void encode_offset_hole(std::span<uint8_t, kOffsetHoleSize> out, uint16_t flags, uint64_t cookie,
                        uint64_t offset, uint32_t hole_length);

// NBD_REPLY_TYPE_NONE with DONE: the success reply of a structured non-READ command.
void encode_none_done(std::span<uint8_t, kChunkHeaderSize> out, uint64_t cookie);

// ERROR (or ERROR_OFFSET when offset is given) chunk; message truncated to 4096.
std::vector<uint8_t> encode_error_chunk(uint16_t flags, uint64_t cookie, uint32_t error,
                                        std::string_view message, const uint64_t* offset = nullptr);

struct StatusExtent {
  uint32_t length = 0;
  uint32_t flags = 0;
};

// One BLOCK_STATUS chunk for one context.
std::vector<uint8_t> encode_block_status_chunk(uint16_t flags, uint64_t cookie, uint32_t context_id,
                                               std::span<const StatusExtent> extents);

// Shape raw extents (64-bit lengths, starting at the request offset) into what
// a BLOCK_STATUS reply may carry: 32-bit lengths, at least one extent, REQ_ONE
// honoured (one extent, not past the request), at most kMaxBlockStatusExtents,
// equal neighbours merged, nothing starting at or past the request end.
struct RawExtent {
  uint64_t length = 0;
  uint32_t flags = 0;
};
std::vector<StatusExtent> shape_extents(std::span<const RawExtent> raw, uint64_t request_length,
                                        bool req_one);

}  // namespace fleece::nbd
