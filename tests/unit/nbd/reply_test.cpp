#include "nbd/reply.hpp"

#include "nbd/constants.hpp"
#include "nbd_test_support.hpp"

#include <doctest/doctest.h>

#include <array>
#include <numeric>

using namespace fleece::nbd;
using namespace fleece::nbd::test;

namespace {

template <size_t N>
Bytes bytes_of(const std::array<uint8_t, N>& a) {
  return Bytes(a.begin(), a.end());
}

uint64_t total(const std::vector<StatusExtent>& v) {
  uint64_t t = 0;
  for (auto& e : v) t += e.length;
  return t;
}

}  // namespace

TEST_CASE("simple reply bytes") {
  std::array<uint8_t, kSimpleReplySize> out{};
  encode_simple_reply(out, 0x0102030405060708ull, kEINVAL);
  Builder want;
  want.u32(0x67446698).u32(22).u64(0x0102030405060708ull);
  CHECK(bytes_of(out) == want.bytes());
}

TEST_CASE("chunk header bytes") {
  std::array<uint8_t, kChunkHeaderSize> out{};
  encode_chunk_header(out, kReplyFlagDone, kReplyBlockStatus, 0xaabbccddeeff0011ull, 0x12345678);
  Builder want;
  want.u32(0x668e33ef).u16(1).u16(5).u64(0xaabbccddeeff0011ull).u32(0x12345678);
  CHECK(bytes_of(out) == want.bytes());
}

TEST_CASE("OFFSET_DATA prefix: header length counts the offset") {
  std::array<uint8_t, kOffsetDataPrefixSize> out{};
  encode_offset_data_prefix(out, 0, 7, 0x1000, 4096);
  Builder want;
  want.u32(0x668e33ef).u16(0).u16(1).u64(7).u32(4096 + 8).u64(0x1000);
  CHECK(bytes_of(out) == want.bytes());
}

TEST_CASE("OFFSET_HOLE chunk is 12 bytes of payload") {
  std::array<uint8_t, kOffsetHoleSize> out{};
  encode_offset_hole(out, kReplyFlagDone, 9, 0x200000000ull, 65536);
  Builder want;
  want.u32(0x668e33ef).u16(1).u16(2).u64(9).u32(12).u64(0x200000000ull).u32(65536);
  CHECK(bytes_of(out) == want.bytes());
}

TEST_CASE("NONE chunk carries DONE and no payload") {
  std::array<uint8_t, kChunkHeaderSize> out{};
  encode_none_done(out, 42);
  Builder want;
  want.u32(0x668e33ef).u16(1).u16(0).u64(42).u32(0);
  CHECK(bytes_of(out) == want.bytes());
}

TEST_CASE("ERROR chunk: error, message length, message") {
  Bytes c = encode_error_chunk(kReplyFlagDone, 5, kEIO, "snapshot broken");
  Builder want;
  want.u32(0x668e33ef).u16(1).u16(0x8001).u64(5).u32(6 + 15).u32(5).u16(15).str("snapshot broken");
  CHECK(c == want.bytes());
}

TEST_CASE("ERROR chunk without a message is 6 bytes of payload") {
  Bytes c = encode_error_chunk(0, 1, kEPERM, "");
  Builder want;
  want.u32(0x668e33ef).u16(0).u16(0x8001).u64(1).u32(6).u32(1).u16(0);
  CHECK(c == want.bytes());
}

TEST_CASE("ERROR_OFFSET chunk ends with the offset") {
  const uint64_t off = 0x123456789aull;
  Bytes c = encode_error_chunk(kReplyFlagDone, 3, kEIO, "bad", &off);
  Builder want;
  want.u32(0x668e33ef).u16(1).u16(0x8002).u64(3).u32(6 + 3 + 8).u32(5).u16(3).str("bad").u64(off);
  CHECK(c == want.bytes());
}

TEST_CASE("ERROR chunk message is truncated to 4096 bytes") {
  std::string msg(5000, 'x');
  Bytes c = encode_error_chunk(kReplyFlagDone, 3, kEIO, msg);
  REQUIRE(c.size() == kChunkHeaderSize + 6 + 4096);
  CHECK(fleece::nbd::wire::load32(c.data() + 16) == 6 + 4096);
  CHECK(fleece::nbd::wire::load16(c.data() + 24) == 4096);
}

TEST_CASE("ERROR chunk never carries error 0") {
  Bytes c = encode_error_chunk(kReplyFlagDone, 3, 0, "");
  CHECK(fleece::nbd::wire::load32(c.data() + 20) == kEIO);
}

TEST_CASE("BLOCK_STATUS chunk: context id then descriptors") {
  const StatusExtent ext[] = {{4096, kStateHole | kStateZero}, {8192, 0}};
  Bytes c = encode_block_status_chunk(kReplyFlagDone, 77, 3, ext);
  Builder want;
  want.u32(0x668e33ef).u16(1).u16(5).u64(77).u32(4 + 16).u32(3).u32(4096).u32(3).u32(8192).u32(0);
  CHECK(c == want.bytes());
}

TEST_CASE("shape_extents: REQ_ONE gives exactly one extent within the request") {
  const RawExtent raw[] = {{1 << 20, 0}, {4096, 1}};
  auto v = shape_extents(raw, 65536, true);
  REQUIRE(v.size() == 1);
  CHECK(v[0].length == 65536);
  CHECK(v[0].flags == 0);

  const RawExtent small[] = {{512, 3}, {4096, 0}};
  v = shape_extents(small, 65536, true);
  REQUIRE(v.size() == 1);
  CHECK(v[0].length == 512);
  CHECK(v[0].flags == 3);
}

TEST_CASE("shape_extents: REQ_ONE merges equal neighbours before picking") {
  const RawExtent raw[] = {{512, 2}, {512, 2}, {1024, 0}};
  auto v = shape_extents(raw, 65536, true);
  REQUIRE(v.size() == 1);
  CHECK(v[0].length == 1024);
  CHECK(v[0].flags == 2);
}

TEST_CASE("shape_extents: last extent clamped to the request end, later ones dropped") {
  const RawExtent raw[] = {{4096, 0}, {1 << 20, 3}, {4096, 0}};
  auto v = shape_extents(raw, 8192, false);
  REQUIRE(v.size() == 2);
  CHECK(v[0].length == 4096);
  CHECK(v[0].flags == 0);
  CHECK(v[1].length == 4096);
  CHECK(v[1].flags == 3);
  CHECK(total(v) == 8192);
}

TEST_CASE("shape_extents: nothing starts at or past the request end") {
  const RawExtent raw[] = {{4096, 0}, {4096, 3}};
  auto v = shape_extents(raw, 4096, false);
  REQUIRE(v.size() == 1);
  CHECK(v[0].length == 4096);
}

TEST_CASE("shape_extents: zero-length extents dropped and equal neighbours merged") {
  const RawExtent raw[] = {{0, 1}, {512, 0}, {0, 3}, {512, 0}, {1024, 3}, {0, 0}, {1024, 3}};
  auto v = shape_extents(raw, 1 << 20, false);
  REQUIRE(v.size() == 2);
  CHECK(v[0].length == 1024);
  CHECK(v[0].flags == 0);
  CHECK(v[1].length == 2048);
  CHECK(v[1].flags == 3);
}

TEST_CASE("shape_extents: shorter than the request is allowed") {
  const RawExtent raw[] = {{512, 1}};
  auto v = shape_extents(raw, 1 << 20, false);
  REQUIRE(v.size() == 1);
  CHECK(v[0].length == 512);
}

TEST_CASE("shape_extents: empty input still yields one extent covering the request") {
  auto v = shape_extents({}, 65536, false);
  REQUIRE(v.size() == 1);
  CHECK(v[0].length == 65536);
  CHECK(v[0].flags == 0);

  const RawExtent zeros[] = {{0, 3}, {0, 1}};
  v = shape_extents(zeros, 4096, true);
  REQUIRE(v.size() == 1);
  CHECK(v[0].length == 4096);
  CHECK(v[0].flags == 0);
}

TEST_CASE("shape_extents: 64-bit lengths split into 512-aligned pieces below 4 GiB") {
  const uint64_t big = 10ull << 30;  // 10 GiB, as a 64-bit request could ask
  const RawExtent raw[] = {{big, 2}};
  auto v = shape_extents(raw, big, false);
  REQUIRE(v.size() == 3);
  CHECK(v[0].length == 0xFFFFFE00u);
  CHECK(v[1].length == 0xFFFFFE00u);
  CHECK(v[0].length % 512 == 0);
  CHECK(total(v) == big);
  for (auto& e : v) CHECK(e.flags == 2);

  auto one = shape_extents(raw, big, true);
  REQUIRE(one.size() == 1);
  CHECK(one[0].length == 0xFFFFFE00u);
}

TEST_CASE("shape_extents: a full 32-bit request fits in one descriptor") {
  const RawExtent raw[] = {{1ull << 40, 0}};
  auto v = shape_extents(raw, 0xFFFFFFFFu, false);
  REQUIRE(v.size() == 1);
  CHECK(v[0].length == 0xFFFFFFFFu);
}

TEST_CASE("shape_extents: at most kMaxBlockStatusExtents descriptors") {
  std::vector<RawExtent> raw;
  raw.reserve(kMaxBlockStatusExtents + 10);
  for (uint32_t i = 0; i < kMaxBlockStatusExtents + 10; ++i) raw.push_back({512, i & 1});
  auto v = shape_extents(raw, 0xFFFFFFFFu, false);
  CHECK(v.size() == kMaxBlockStatusExtents);
  CHECK(v[1].flags == 1);
  CHECK(v.back().length == 512);
}

TEST_CASE("shape_extents: a zero-length request still answers a non-zero extent") {
  const RawExtent raw[] = {{4096, 1}};
  auto v = shape_extents(raw, 0, false);
  REQUIRE(v.size() == 1);
  CHECK(v[0].length > 0);
}
