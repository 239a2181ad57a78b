#include "nbd/request.hpp"

#include "nbd/constants.hpp"
#include "nbd_test_support.hpp"

#include <doctest/doctest.h>

#include <cerrno>
#include <cstring>

using namespace fleece::nbd;
using namespace fleece::nbd::test;

namespace {

constexpr uint64_t kSize = 1ull << 30;

uint16_t all_features() {
  return kFlagHasFlags | kFlagSendFlush | kFlagSendFua | kFlagSendTrim | kFlagSendWriteZeroes |
         kFlagSendDf | kFlagCanMultiConn | kFlagSendCache | kFlagSendFastZero;
}

Session writable_session() {
  Session s;
  s.export_info.name = "disk0";
  s.export_info.size = kSize;
  s.export_info.min_block = 1;
  s.export_info.max_block = 32u << 20;
  s.transmission_flags = all_features();
  s.structured_replies = true;
  s.contexts = {{1, "base:allocation"}};
  return s;
}

Request req(uint16_t type, uint64_t offset = 0, uint32_t length = 4096, uint16_t flags = 0) {
  Request r;
  r.type = type;
  r.flags = flags;
  r.cookie = 0x1234;
  r.offset = offset;
  r.length = length;
  return r;
}

// The verdict's error, after checking that every error comes with a message.
uint32_t verdict(const Request& r, const Session& s) {
  Verdict v = validate(r, s);
  if (v.error != 0 || v.disconnect) {
    CHECK(v.message != nullptr);
    if (v.message) CHECK(std::strlen(v.message) > 0);
  }
  CHECK_FALSE(v.disconnect);
  return v.error;
}

const uint16_t kAllCommands[] = {kCmdRead, kCmdWrite, kCmdFlush, kCmdTrim,
                                 kCmdCache, kCmdWriteZeroes, kCmdBlockStatus};

}  // namespace

TEST_CASE("decode_request reads every field big-endian") {
  Builder b;
  b.u32(0x25609513).u16(0x0011).u16(6).u64(0x0102030405060708ull).u64(0x1122334455667788ull).u32(
      0xa0b0c0d0);
  auto r = decode_request(std::span<const uint8_t, kRequestSize>(b.bytes().data(), kRequestSize));
  REQUIRE(r);
  CHECK(r->flags == 0x0011);
  CHECK(r->type == 6);
  CHECK(r->cookie == 0x0102030405060708ull);
  CHECK(r->offset == 0x1122334455667788ull);
  CHECK(r->length == 0xa0b0c0d0u);
}

TEST_CASE("decode_request refuses a wrong magic") {
  Builder b;
  b.u32(0x25609514).zeroes(24);  // the reserved data-log magic
  CHECK_FALSE(decode_request(std::span<const uint8_t, kRequestSize>(b.bytes().data(), kRequestSize)));
  Builder extended;
  extended.u32(0x21e41c71).zeroes(24);  // extended-header request magic: not negotiated
  CHECK_FALSE(
      decode_request(std::span<const uint8_t, kRequestSize>(extended.bytes().data(), kRequestSize)));
}

TEST_CASE("payload_length: only WRITE carries data") {
  CHECK(payload_length(req(kCmdWrite, 0, 12345)) == 12345);
  for (uint16_t t : {kCmdRead, kCmdFlush, kCmdTrim, kCmdCache, kCmdWriteZeroes, kCmdBlockStatus,
                     kCmdDisc})
    CHECK(payload_length(req(t, 0, 12345)) == 0);
}

TEST_CASE("valid requests of every command are served") {
  Session s = writable_session();
  for (uint16_t t : kAllCommands) {
    CAPTURE(t);
    CHECK(verdict(req(t, 4096, 65536), s) == kOk);
  }
  CHECK(verdict(req(kCmdDisc, 0, 0), s) == kOk);
  CHECK(verdict(req(kCmdFlush, 0, 0), s) == kOk);
}

TEST_CASE("unknown commands are EINVAL") {
  Session s = writable_session();
  for (uint16_t t : {uint16_t(kCmdResize), uint16_t(9), uint16_t(0xffff)}) {
    CAPTURE(t);
    CHECK(verdict(req(t), s) == kEINVAL);
  }
}

TEST_CASE("DISC needs no validation") {
  Session s = writable_session();
  CHECK(validate(req(kCmdDisc, 123, 7, 0xffff), s).error == kOk);
}

TEST_CASE("FUA is valid on every command once SEND_FUA is advertised") {
  Session s = writable_session();
  for (uint16_t t : kAllCommands) {
    CAPTURE(t);
    CHECK(verdict(req(t, 0, 4096, kCmdFlagFua), s) == kOk);
  }
  s.transmission_flags &= ~kFlagSendFua;
  for (uint16_t t : kAllCommands) {
    CAPTURE(t);
    CHECK(verdict(req(t, 0, 4096, kCmdFlagFua), s) == kEINVAL);
  }
}

TEST_CASE("command x flag matrix") {
  Session s = writable_session();
  struct Allowed {
    uint16_t flag;
    uint16_t command;
  };
  const Allowed allowed[] = {{kCmdFlagNoHole, kCmdWriteZeroes},
                             {kCmdFlagFastZero, kCmdWriteZeroes},
                             {kCmdFlagDf, kCmdRead},
                             {kCmdFlagReqOne, kCmdBlockStatus}};
  for (const Allowed& a : allowed) {
    for (uint16_t t : kAllCommands) {
      CAPTURE(a.flag);
      CAPTURE(t);
      CHECK(verdict(req(t, 0, 4096, a.flag), s) == (t == a.command ? kOk : kEINVAL));
    }
  }
  for (uint16_t t : kAllCommands) {
    CAPTURE(t);
    CHECK(verdict(req(t, 0, 4096, kCmdFlagPayloadLen), s) == kEINVAL);  // never valid
    CHECK(verdict(req(t, 0, 4096, 1u << 6), s) == kEINVAL);           // unknown bits
    CHECK(verdict(req(t, 0, 4096, 1u << 15), s) == kEINVAL);
  }
}

TEST_CASE("flags whose transmission flag was not advertised are EINVAL") {
  Session s = writable_session();
  s.transmission_flags &= ~kFlagSendFastZero;
  CHECK(verdict(req(kCmdWriteZeroes, 0, 4096, kCmdFlagFastZero), s) == kEINVAL);
  CHECK(verdict(req(kCmdWriteZeroes, 0, 4096, kCmdFlagNoHole), s) == kOk);

  s = writable_session();
  s.transmission_flags &= ~kFlagSendDf;
  CHECK(verdict(req(kCmdRead, 0, 4096, kCmdFlagDf), s) == kEINVAL);

  s = writable_session();
  s.structured_replies = false;  // DF only with structured replies, even if the bit leaked
  CHECK(verdict(req(kCmdRead, 0, 4096, kCmdFlagDf), s) == kEINVAL);
}

TEST_CASE("TRIM and WRITE_ZEROES not advertised are EINVAL; FLUSH is always safe") {
  Session s = writable_session();
  s.transmission_flags &= ~(kFlagSendFlush | kFlagSendTrim | kFlagSendWriteZeroes);
  CHECK(verdict(req(kCmdFlush, 0, 0), s) == kOk);
  CHECK(verdict(req(kCmdTrim), s) == kEINVAL);
  CHECK(verdict(req(kCmdWriteZeroes), s) == kEINVAL);
  CHECK(verdict(req(kCmdRead), s) == kOk);
  CHECK(verdict(req(kCmdWrite), s) == kOk);
}

TEST_CASE("CACHE is accepted without SEND_CACHE (clients send it anyway)") {
  Session s = writable_session();
  s.transmission_flags &= ~kFlagSendCache;
  CHECK(verdict(req(kCmdCache), s) == kOk);
}

TEST_CASE("read-only export: WRITE, TRIM, WRITE_ZEROES are EPERM; reads are fine") {
  Session s = writable_session();
  s.transmission_flags |= kFlagReadOnly;
  CHECK(verdict(req(kCmdWrite), s) == kEPERM);
  CHECK(verdict(req(kCmdTrim), s) == kEPERM);
  CHECK(verdict(req(kCmdWriteZeroes), s) == kEPERM);
  CHECK(verdict(req(kCmdWriteZeroes, 0, 0), s) == kEPERM);
  CHECK(verdict(req(kCmdRead), s) == kOk);
  CHECK(verdict(req(kCmdCache), s) == kOk);
  CHECK(verdict(req(kCmdBlockStatus), s) == kOk);
  CHECK(verdict(req(kCmdFlush, 0, 0), s) == kOk);
}

TEST_CASE("read-only export as advertised: writes are EPERM even with unoffered flags/commands") {
  Session s = writable_session();
  s.transmission_flags = kFlagHasFlags | kFlagReadOnly | kFlagSendCache | kFlagCanMultiConn;
  CHECK(verdict(req(kCmdWrite), s) == kEPERM);
  CHECK(verdict(req(kCmdWrite, 0, 512, kCmdFlagFua), s) == kEPERM);
  CHECK(verdict(req(kCmdTrim), s) == kEPERM);
  CHECK(verdict(req(kCmdWriteZeroes, 0, 65536), s) == kEPERM);
  CHECK(verdict(req(kCmdWriteZeroes, 0, 65536, kCmdFlagFastZero | kCmdFlagNoHole), s) == kEPERM);
  CHECK(verdict(req(kCmdWrite, kSize, 4096), s) == kEPERM);  // even past the end
  CHECK(verdict(req(kCmdRead, 0, 512, kCmdFlagFua), s) == kEINVAL);
  CHECK(verdict(req(kCmdFlush, 0, 0), s) == kOk);
  CHECK(verdict(req(kCmdRead), s) == kOk);
}

TEST_CASE("past the end: READ/TRIM/CACHE/BLOCK_STATUS EINVAL, WRITE/WRITE_ZEROES ENOSPC") {
  Session s = writable_session();
  for (uint16_t t : kAllCommands) {
    if (t == kCmdFlush) continue;
    CAPTURE(t);
    const uint32_t want = (t == kCmdWrite || t == kCmdWriteZeroes) ? kENOSPC : kEINVAL;
    CHECK(verdict(req(t, kSize - 4096, 8192), s) == want);  // straddles the end
    CHECK(verdict(req(t, kSize, 1), s) == want);             // starts at the end
    CHECK(verdict(req(t, kSize + 4096, 4096), s) == want);   // starts past it
    CHECK(verdict(req(t, kSize - 4096, 4096), s) == kOk);    // ends exactly at it
  }
}

TEST_CASE("offset + length overflowing 64 bits is caught, not wrapped") {
  Session s = writable_session();
  const uint64_t near_max = ~0ull - 100;
  CHECK(verdict(req(kCmdRead, near_max, 4096), s) == kEINVAL);
  CHECK(verdict(req(kCmdWrite, near_max, 4096), s) == kENOSPC);
  CHECK(verdict(req(kCmdTrim, ~0ull, 1), s) == kEINVAL);
  CHECK(verdict(req(kCmdWriteZeroes, ~0ull, 0xffffffffu), s) == kENOSPC);
  CHECK(verdict(req(kCmdBlockStatus, ~0ull - 1, 2), s) == kEINVAL);
}

TEST_CASE("misaligned to min_block is EINVAL") {
  Session s = writable_session();
  s.export_info.min_block = 512;
  for (uint16_t t : kAllCommands) {
    if (t == kCmdFlush) continue;
    CAPTURE(t);
    CHECK(verdict(req(t, 100, 512), s) == kEINVAL);
    CHECK(verdict(req(t, 512, 100), s) == kEINVAL);
    CHECK(verdict(req(t, 512, 1024), s) == kOk);
  }
  CHECK(verdict(req(kCmdFlush, 0, 0), s) == kOk);
}

TEST_CASE("WRITE longer than kMaxPayload disconnects: the stream cannot be resynchronised") {
  Session s = writable_session();
  Verdict v = validate(req(kCmdWrite, 0, kMaxPayload + 1), s);
  CHECK(v.disconnect);
  CHECK(v.message != nullptr);
  // Even on a read-only export, or with bad flags: the payload is never read.
  s.transmission_flags |= kFlagReadOnly;
  CHECK(validate(req(kCmdWrite, 0, 0xffffffffu, 0x8000), s).disconnect);
}

TEST_CASE("WRITE over max_block but within kMaxPayload: EINVAL, payload drained by caller") {
  Session s = writable_session();
  s.export_info.max_block = 1u << 20;
  Verdict v = validate(req(kCmdWrite, 0, 2u << 20), s);
  CHECK(v.error == kEINVAL);
  CHECK_FALSE(v.disconnect);
  CHECK(verdict(req(kCmdWrite, 0, 1u << 20), s) == kOk);
}

TEST_CASE("READ over max_block: EOVERFLOW with DF, else EINVAL") {
  Session s = writable_session();
  s.export_info.max_block = 1u << 20;
  CHECK(verdict(req(kCmdRead, 0, 2u << 20), s) == kEINVAL);
  CHECK(verdict(req(kCmdRead, 0, 2u << 20, kCmdFlagDf), s) == kEOVERFLOW);
  CHECK(verdict(req(kCmdRead, 0, 1u << 20, kCmdFlagDf), s) == kOk);
  CHECK(verdict(req(kCmdCache, 0, 2u << 20), s) == kEINVAL);
}

TEST_CASE("TRIM, WRITE_ZEROES and BLOCK_STATUS may exceed max_block (no payload)") {
  Session s = writable_session();
  s.export_info.max_block = 1u << 20;
  CHECK(verdict(req(kCmdTrim, 0, 64u << 20), s) == kOk);
  CHECK(verdict(req(kCmdWriteZeroes, 0, 64u << 20), s) == kOk);
  CHECK(verdict(req(kCmdWriteZeroes, 0, 64u << 20, kCmdFlagFastZero), s) == kOk);
  CHECK(verdict(req(kCmdBlockStatus, 0, 64u << 20), s) == kOk);
}

TEST_CASE("BLOCK_STATUS needs structured replies and a selected context") {
  Session s = writable_session();
  s.contexts.clear();
  CHECK(verdict(req(kCmdBlockStatus), s) == kEINVAL);
  s = writable_session();
  s.structured_replies = false;
  CHECK(verdict(req(kCmdBlockStatus), s) == kEINVAL);
}

TEST_CASE("zero-length requests: valid except BLOCK_STATUS") {
  Session s = writable_session();
  CHECK(verdict(req(kCmdRead, 4096, 0), s) == kOk);
  CHECK(verdict(req(kCmdWrite, 4096, 0), s) == kOk);
  CHECK(verdict(req(kCmdTrim, 4096, 0), s) == kOk);
  CHECK(verdict(req(kCmdWriteZeroes, 4096, 0), s) == kOk);
  CHECK(verdict(req(kCmdRead, kSize, 0), s) == kOk);  // at the very end
  CHECK(verdict(req(kCmdBlockStatus, 4096, 0), s) == kEINVAL);
}

TEST_CASE("every error verdict carries a message") {
  Session s = writable_session();
  s.export_info.min_block = 512;
  s.transmission_flags |= kFlagReadOnly;
  const Request bad[] = {req(99), req(kCmdRead, 1, 512), req(kCmdWrite, 0, 512),
                         req(kCmdRead, kSize, 512), req(kCmdRead, 0, 512, kCmdFlagReqOne)};
  for (const Request& r : bad) {
    Verdict v = validate(r, s);
    CHECK(v.error != 0);
    REQUIRE(v.message != nullptr);
    CHECK(std::strlen(v.message) > 0);
  }
}

TEST_CASE("errno_to_nbd maps host errors to wire errors") {
  CHECK(errno_to_nbd(0) == kOk);
  CHECK(errno_to_nbd(EPERM) == kEPERM);
  CHECK(errno_to_nbd(EROFS) == kEPERM);
  CHECK(errno_to_nbd(EIO) == kEIO);
  CHECK(errno_to_nbd(ENOMEM) == kENOMEM);
  CHECK(errno_to_nbd(EINVAL) == kEINVAL);
  CHECK(errno_to_nbd(ENOSPC) == kENOSPC);
  CHECK(errno_to_nbd(EDQUOT) == kENOSPC);
  CHECK(errno_to_nbd(EFBIG) == kENOSPC);
  CHECK(errno_to_nbd(EOVERFLOW) == kEOVERFLOW);
  CHECK(errno_to_nbd(ENOTSUP) == kENOTSUP);
  CHECK(errno_to_nbd(EOPNOTSUPP) == kENOTSUP);
  CHECK(errno_to_nbd(ESHUTDOWN) == kESHUTDOWN);
  CHECK(errno_to_nbd(EACCES) == kEIO);
  CHECK(errno_to_nbd(EBADF) == kEIO);
  CHECK(errno_to_nbd(-1) == kEIO);
  CHECK(errno_to_nbd(100000) == kEIO);
}
