// Transmission-phase requests: decoding and validation against the session.
#pragma once

#include "nbd/negotiation.hpp"

#include <cstdint>
#include <optional>
#include <span>

namespace fleece::nbd {

inline constexpr size_t kRequestSize = 28;

struct Request {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
};

// nullopt when the magic is wrong (the stream is lost: drop the connection).
std::optional<Request> decode_request(std::span<const uint8_t, kRequestSize> in);

// Bytes of payload that follow the request on the wire (WRITE: length; else 0).
uint32_t payload_length(const Request& r);

struct Verdict {
  uint32_t error = 0;            // NBD error value to reply with; 0 = serve it
  bool disconnect = false;       // the stream cannot be kept in sync: hard close
  const char* message = nullptr; // why, for the structured ERROR chunk and the log
};

// Checks command, flags, range, alignment, read-only and negotiated state,
// returning the spec's error value. In order: unknown command (EINVAL); WRITE
// over kMaxPayload (disconnect); WRITE/TRIM/WRITE_ZEROES on a read-only export
// (EPERM, whatever the flags); flags not valid for the command or not
// advertised (EINVAL); TRIM/WRITE_ZEROES not advertised, BLOCK_STATUS without
// structured replies, contexts or length (EINVAL); past the end
// (WRITE/WRITE_ZEROES ENOSPC, others EINVAL); misaligned to min_block
// (EINVAL); READ/WRITE/CACHE over max_block (EINVAL, or EOVERFLOW for a DF
// read). FLUSH and CACHE are served even when not advertised (always safe;
// clients send them anyway); TRIM, WRITE_ZEROES and BLOCK_STATUS may exceed
// max_block. Every error verdict has a message. If disconnect is false and payload_length()
// is non-zero, the caller must still read (and discard) the payload.
Verdict validate(const Request& r, const Session& s);

// Host errno (from std::error_code::value() of generic/system category) to
// the NBD wire error.
uint32_t errno_to_nbd(int err);

}  // namespace fleece::nbd
