// Transmission-phase reply encoders and block status shaping (see reply.hpp).
#include "nbd/reply.hpp"

#include "nbd/constants.hpp"
#include "nbd/wire.hpp"

#include <algorithm>
#include <limits>

namespace fleece::nbd {

void encode_simple_reply(std::span<uint8_t, kSimpleReplySize> out, uint64_t cookie, uint32_t error) {
  wire::store32(out.data(), kSimpleReplyMagic);
  wire::store32(out.data() + 4, error);
  wire::store64(out.data() + 8, cookie);
}

void encode_chunk_header(std::span<uint8_t, kChunkHeaderSize> out, uint16_t flags, uint16_t type,
                         uint64_t cookie, uint32_t length) {
  wire::store32(out.data(), kStructuredReplyMagic);
  wire::store16(out.data() + 4, flags);
  wire::store16(out.data() + 6, type);
  wire::store64(out.data() + 8, cookie);
  wire::store32(out.data() + 16, length);
}

void encode_offset_data_prefix(std::span<uint8_t, kOffsetDataPrefixSize> out, uint16_t flags,
                               uint64_t cookie, uint64_t offset, uint32_t data_length) {
  encode_chunk_header(out.first<kChunkHeaderSize>(), flags, kReplyOffsetData, cookie,
                      data_length + 8);
  wire::store64(out.data() + kChunkHeaderSize, offset);
}

void encode_offset_hole(std::span<uint8_t, kOffsetHoleSize> out, uint16_t flags, uint64_t cookie,
                        uint64_t offset, uint32_t hole_length) {
  encode_chunk_header(out.first<kChunkHeaderSize>(), flags, kReplyOffsetHole, cookie, 12);
  wire::store64(out.data() + kChunkHeaderSize, offset);
  wire::store32(out.data() + kChunkHeaderSize + 8, hole_length);
}

void encode_none_done(std::span<uint8_t, kChunkHeaderSize> out, uint64_t cookie) {
  encode_chunk_header(out, kReplyFlagDone, kReplyNone, cookie, 0);
}

std::vector<uint8_t> encode_error_chunk(uint16_t flags, uint64_t cookie, uint32_t error,
                                        std::string_view message, const uint64_t* offset) {
  if (message.size() > kMaxStringLength) message = message.substr(0, kMaxStringLength);
  // The spec forbids a zero error in an error chunk; a caller passing 0 has a
  // bug, and EIO is the answer that cannot be mistaken for success.
  if (error == 0) error = kEIO;
  const size_t length = 6 + message.size() + (offset ? 8 : 0);
  std::vector<uint8_t> out(kChunkHeaderSize + length);
  encode_chunk_header(std::span<uint8_t, kChunkHeaderSize>(out.data(), kChunkHeaderSize), flags,
                      offset ? kReplyErrorOffset : kReplyError, cookie, uint32_t(length));
  uint8_t* p = out.data() + kChunkHeaderSize;
  wire::store32(p, error);
  wire::store16(p + 4, uint16_t(message.size()));
  if (!message.empty()) std::memcpy(p + 6, message.data(), message.size());
  if (offset) wire::store64(p + 6 + message.size(), *offset);
  return out;
}

std::vector<uint8_t> encode_block_status_chunk(uint16_t flags, uint64_t cookie, uint32_t context_id,
                                               std::span<const StatusExtent> extents) {
  const size_t length = 4 + 8 * extents.size();
  std::vector<uint8_t> out(kChunkHeaderSize + length);
  encode_chunk_header(std::span<uint8_t, kChunkHeaderSize>(out.data(), kChunkHeaderSize), flags,
                      kReplyBlockStatus, cookie, uint32_t(length));
  uint8_t* p = out.data() + kChunkHeaderSize;
  wire::store32(p, context_id);
  p += 4;
  for (const StatusExtent& e : extents) {
    wire::store32(p, e.length);
    wire::store32(p + 4, e.flags);
    p += 8;
  }
  return out;
}

namespace {

// Longest extent a 32-bit descriptor carries while staying 512-aligned.
constexpr uint64_t kMaxExtentLength = 0xFFFFFE00ull;

}  // namespace

std::vector<StatusExtent> shape_extents(std::span<const RawExtent> raw, uint64_t request_length,
                                        bool req_one) {
  // A zero-length request is refused by validate(); if one gets here anyway,
  // one byte is the smallest answer that still lets a client make progress.
  const uint64_t end = std::max<uint64_t>(request_length, 1);

  // Merge equal neighbours and drop empty extents, stopping at the request end.
  std::vector<RawExtent> merged;
  uint64_t pos = 0;
  for (const RawExtent& e : raw) {
    if (pos >= end) break;
    if (e.length == 0) continue;
    const uint64_t len = std::min(e.length, end - pos);
    if (!merged.empty() && merged.back().flags == e.flags) {
      merged.back().length += len;
    } else {
      merged.push_back({len, e.flags});
    }
    pos += len;
    if (req_one && merged.size() > 1) break;
  }
  if (merged.empty()) merged.push_back({end, 0});  // status 0 is always a safe answer
  if (req_one) merged.resize(1);

  std::vector<StatusExtent> out;
  for (const RawExtent& e : merged) {
    uint64_t left = e.length;
    while (left > 0 && out.size() < kMaxBlockStatusExtents) {
      const uint64_t piece = left > std::numeric_limits<uint32_t>::max() ? kMaxExtentLength : left;
      out.push_back({uint32_t(piece), e.flags});
      left -= piece;
      if (req_one) return out;
    }
    if (out.size() >= kMaxBlockStatusExtents) break;
  }
  return out;
}

}  // namespace fleece::nbd
