#include "nbd/handshake.hpp"

#include "nbd/constants.hpp"
#include "nbd_test_support.hpp"

#include <doctest/doctest.h>

using namespace fleece::nbd;
using namespace fleece::nbd::test;

TEST_CASE("constants match doc/proto.md") {
  CHECK(kNbdMagic == 0x4e42444d41474943ull);
  CHECK(kIHaveOpt == 0x49484156454F5054ull);
  CHECK(kOptReplyMagic == 0x3e889045565a9ull);
  CHECK(kRequestMagic == 0x25609513u);
  CHECK(kSimpleReplyMagic == 0x67446698u);
  CHECK(kStructuredReplyMagic == 0x668e33efu);
  CHECK(kOptListMetaContext == 9);
  CHECK(kOptSetMetaContext == 10);
  CHECK(kOptExtendedHeaders == 11);
  CHECK(kRepErrUnsup == 0x80000001u);
  CHECK(kRepErrTooBig == 0x80000009u);
  CHECK(kRepErrExtHeaderReqd == 0x8000000au);
  CHECK(kFlagSendFastZero == 0x0800);
  CHECK(kCmdFlagFastZero == 0x10);
  CHECK(kReplyError == 0x8001);
  CHECK(kReplyErrorOffset == 0x8002);
  CHECK(kEOVERFLOW == 75);
  CHECK(kENOTSUP == 95);
  CHECK(kESHUTDOWN == 108);
}

TEST_CASE("greeting is NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE|NO_ZEROES") {
  auto g = encode_greeting();
  const Bytes want = {'N', 'B', 'D', 'M', 'A', 'G', 'I', 'C', 'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T',
                      0x00, 0x03};
  CHECK(Bytes(g.begin(), g.end()) == want);
}

TEST_CASE("option header decodes option and length") {
  Builder b;
  b.str("IHAVEOPT").u32(kOptGo).u32(0x01020304);
  auto h = decode_option_header(std::span<const uint8_t, kOptionHeaderSize>(b.bytes().data(), 16));
  REQUIRE(h);
  CHECK(h->option == kOptGo);
  CHECK(h->length == 0x01020304u);
}

TEST_CASE("option header with a wrong magic is refused") {
  Builder b;
  b.str("IHAVEOPU").u32(kOptGo).u32(0);
  CHECK_FALSE(decode_option_header(std::span<const uint8_t, kOptionHeaderSize>(b.bytes().data(), 16)));
  Builder z;
  z.zeroes(16);
  CHECK_FALSE(decode_option_header(std::span<const uint8_t, kOptionHeaderSize>(z.bytes().data(), 16)));
}

TEST_CASE("option reply encodes magic, option, type, length, data") {
  const Bytes data = {0xde, 0xad, 0xbe};
  Bytes r = encode_option_reply(kOptList, kRepServer, data);
  const Bytes want = {0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9,  // magic
                      0x00, 0x00, 0x00, 0x03,                          // option
                      0x00, 0x00, 0x00, 0x02,                          // reply type
                      0x00, 0x00, 0x00, 0x03,                          // length
                      0xde, 0xad, 0xbe};
  CHECK(r == want);

  Bytes ack = encode_option_reply(kOptAbort, kRepAck);
  REQUIRE(ack.size() == 20);
  CHECK(fleece::nbd::wire::load32(ack.data() + 12) == kRepAck);
  CHECK(fleece::nbd::wire::load32(ack.data() + 16) == 0);

  Bytes err = encode_option_reply(kOptGo, kRepErrUnknown);
  CHECK(fleece::nbd::wire::load32(err.data() + 12) == 0x80000006u);
}
