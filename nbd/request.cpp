// Request decoding and validation (see request.hpp; the error choices follow
// doc/proto.md "Error values" and "Block size constraints").
#include "nbd/request.hpp"

#include "nbd/constants.hpp"
#include "nbd/wire.hpp"

#include <cerrno>

namespace fleece::nbd {

std::optional<Request> decode_request(std::span<const uint8_t, kRequestSize> in) {
  if (wire::load32(in.data()) != kRequestMagic) return std::nullopt;
  Request r;
  r.flags = wire::load16(in.data() + 4);
  r.type = wire::load16(in.data() + 6);
  r.cookie = wire::load64(in.data() + 8);
  r.offset = wire::load64(in.data() + 16);
  r.length = wire::load32(in.data() + 24);
  return r;
}

uint32_t payload_length(const Request& r) { return r.type == kCmdWrite ? r.length : 0; }

namespace {

Verdict fail(uint32_t error, const char* message) { return {error, false, message}; }

// Command flags documented for each command; FUA is valid on all of them once
// SEND_FUA is advertised (proto.md, "Command flags").
uint16_t flags_valid_for(uint16_t type) {
  switch (type) {
    case kCmdRead: return kCmdFlagFua | kCmdFlagDf;
    case kCmdWriteZeroes: return kCmdFlagFua | kCmdFlagNoHole | kCmdFlagFastZero;
    case kCmdBlockStatus: return kCmdFlagFua | kCmdFlagReqOne;
    default: return kCmdFlagFua;
  }
}

}  // namespace

Verdict validate(const Request& r, const Session& s) {
  const ExportInfo& e = s.export_info;
  const uint16_t tflags = s.transmission_flags;

  switch (r.type) {
    case kCmdDisc: return {};
    case kCmdRead:
    case kCmdWrite:
    case kCmdFlush:
    case kCmdTrim:
    case kCmdCache:
    case kCmdWriteZeroes:
    case kCmdBlockStatus: break;
    default: return fail(kEINVAL, "unknown command");
  }
  // Checked first: a payload this large is never read, so nothing after this
  // request could be parsed.
  if (r.type == kCmdWrite && r.length > kMaxPayload)
    return {kEINVAL, true, "write payload larger than 32 MiB"};

  // Before the flag checks: a read-only export refuses every write with EPERM
  // even when the client also used a flag or command it was not offered
  // (FUA, TRIM and WRITE_ZEROES are not advertised on read-only exports).
  const bool writes = r.type == kCmdWrite || r.type == kCmdTrim || r.type == kCmdWriteZeroes;
  if (writes && (tflags & kFlagReadOnly)) return fail(kEPERM, "export is read-only");

  if (r.flags & ~flags_valid_for(r.type)) return fail(kEINVAL, "flag not valid for this command");
  if ((r.flags & kCmdFlagFua) && !(tflags & kFlagSendFua))
    return fail(kEINVAL, "FUA flag used but not advertised");
  if ((r.flags & kCmdFlagDf) && !(s.structured_replies && (tflags & kFlagSendDf)))
    return fail(kEINVAL, "DF flag used but not advertised");
  if ((r.flags & kCmdFlagFastZero) && !(tflags & kFlagSendFastZero))
    return fail(kEINVAL, "FAST_ZERO flag used but not advertised");

  switch (r.type) {
    case kCmdFlush:
      // Served even when not advertised: a flush is always safe, and clients
      // send it anyway. Offset and length are reserved; nothing else to check.
      return {};
    case kCmdTrim:
      if (!(tflags & kFlagSendTrim)) return fail(kEINVAL, "TRIM not advertised");
      break;
    case kCmdWriteZeroes:
      if (!(tflags & kFlagSendWriteZeroes)) return fail(kEINVAL, "WRITE_ZEROES not advertised");
      break;
    case kCmdBlockStatus:
      if (!s.structured_replies) return fail(kEINVAL, "BLOCK_STATUS needs structured replies");
      if (s.contexts.empty()) return fail(kEINVAL, "BLOCK_STATUS needs a selected meta context");
      if (r.length == 0) return fail(kEINVAL, "zero-length BLOCK_STATUS");
      break;
    default:
      break;  // CACHE is served unadvertised: known clients send it anyway, and it is a hint
  }

  if (r.offset > e.size || r.length > e.size - r.offset) {
    if (r.type == kCmdWrite || r.type == kCmdWriteZeroes)
      return fail(kENOSPC, "write past the end of the export");
    return fail(kEINVAL, "request past the end of the export");
  }

  const uint32_t min_block = e.min_block ? e.min_block : 1;
  if (r.offset % min_block || r.length % min_block)
    return fail(kEINVAL, "request not aligned to the minimum block size");

  if (r.length > e.max_block) {
    if (r.type == kCmdRead)
      return (r.flags & kCmdFlagDf) ? fail(kEOVERFLOW, "DF read larger than the maximum block size")
                                    : fail(kEINVAL, "read larger than the maximum block size");
    if (r.type == kCmdWrite) return fail(kEINVAL, "write larger than the maximum block size");
    if (r.type == kCmdCache) return fail(kEINVAL, "cache larger than the maximum block size");
  }
  return {};
}

uint32_t errno_to_nbd(int err) {
  switch (err) {
    case 0: return kOk;
    case EPERM:
    case EROFS: return kEPERM;
    case EIO: return kEIO;
    case ENOMEM: return kENOMEM;
    case EINVAL: return kEINVAL;
    case ENOSPC:
    case EDQUOT:
    case EFBIG: return kENOSPC;
    case EOVERFLOW: return kEOVERFLOW;
    case ENOTSUP: return kENOTSUP;  // == EOPNOTSUPP on Linux
    case ESHUTDOWN: return kESHUTDOWN;
    default: return kEIO;
  }
}

}  // namespace fleece::nbd
