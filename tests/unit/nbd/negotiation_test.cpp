#include "nbd/negotiation.hpp"

#include "nbd/constants.hpp"
#include "nbd_test_support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <set>

using namespace fleece::nbd;
using namespace fleece::nbd::test;
using Action = Negotiator::Action;

namespace {

// A negotiator past the client flags, over the standard catalog.
struct Fixture {
  explicit Fixture(NegotiatorConfig config = {}, uint32_t client_flags = kClientFixedNewstyle |
                                                                         kClientNoZeroes)
      : catalog(standard_catalog()), n(catalog, config) {
    REQUIRE(n.on_client_flags(client_flags));
  }
  Negotiator::Step opt(uint32_t option, std::span<const uint8_t> payload = {}) {
    return n.on_option(option, payload);
  }
  std::vector<OptReply> replies(uint32_t option, std::span<const uint8_t> payload = {},
                                Action want = Action::kContinue) {
    auto step = n.on_option(option, payload);
    CHECK(step.action == want);
    auto r = parse_replies(step.reply);
    for (auto& one : r) CHECK(one.option == option);
    return r;
  }
  // One error reply, with a human-readable message, and the connection kept.
  void expect_error(uint32_t option, std::span<const uint8_t> payload, uint32_t err) {
    auto r = replies(option, payload);
    REQUIRE(r.size() == 1);
    CHECK(r[0].type == err);
    CHECK_FALSE(r[0].data.empty());
  }
  void structured() {
    auto r = replies(kOptStructuredReply);
    REQUIRE(r.size() == 1);
    REQUIRE(r[0].type == kRepAck);
  }
  FakeCatalog catalog;
  Negotiator n;
};

struct Info {
  std::optional<uint64_t> size;
  std::optional<uint16_t> flags;
  std::optional<std::string> name, description;
  std::optional<std::array<uint32_t, 3>> block;
  int export_count = 0;
  bool acked = false;
};

Info decode_info(const std::vector<OptReply>& rs) {
  Info info;
  for (size_t i = 0; i < rs.size(); ++i) {
    const OptReply& r = rs[i];
    if (r.type == kRepAck) {
      CHECK(i + 1 == rs.size());  // ACK is final
      CHECK(r.data.empty());
      info.acked = true;
      continue;
    }
    REQUIRE(r.type == kRepInfo);
    REQUIRE(r.data.size() >= 2);
    const uint8_t* p = r.data.data();
    switch (wire::load16(p)) {
      case kInfoExport:
        REQUIRE(r.data.size() == 12);
        info.size = wire::load64(p + 2);
        info.flags = wire::load16(p + 10);
        ++info.export_count;
        break;
      case kInfoName: info.name = std::string(r.data.begin() + 2, r.data.end()); break;
      case kInfoDescription: info.description = std::string(r.data.begin() + 2, r.data.end()); break;
      case kInfoBlockSize:
        REQUIRE(r.data.size() == 14);
        info.block = {wire::load32(p + 2), wire::load32(p + 6), wire::load32(p + 10)};
        break;
      default: FAIL("unexpected info type");
    }
  }
  return info;
}

struct Ctx {
  uint32_t id;
  std::string name;
};

// META_CONTEXT replies then ACK.
std::vector<Ctx> decode_contexts(const std::vector<OptReply>& rs) {
  std::vector<Ctx> out;
  REQUIRE(!rs.empty());
  CHECK(rs.back().type == kRepAck);
  for (size_t i = 0; i + 1 < rs.size(); ++i) {
    REQUIRE(rs[i].type == kRepMetaContext);
    REQUIRE(rs[i].data.size() >= 4);
    out.push_back({wire::load32(rs[i].data.data()), std::string(rs[i].data.begin() + 4, rs[i].data.end())});
  }
  return out;
}

std::vector<std::string> names_of(const std::vector<Ctx>& v) {
  std::vector<std::string> out;
  for (auto& c : v) out.push_back(c.name);
  return out;
}

const uint16_t kDiskFlags = kFlagSendFlush | kFlagSendFua | kFlagSendTrim | kFlagSendWriteZeroes |
                            kFlagSendDf | kFlagCanMultiConn | kFlagSendCache | kFlagSendFastZero;

}  // namespace

// ---------------------------------------------------------------- client flags

TEST_CASE("client flags: FIXED_NEWSTYLE required, NO_ZEROES optional, nothing else") {
  FakeCatalog c = standard_catalog();
  {
    Negotiator n(c, {});
    CHECK(n.on_client_flags(kClientFixedNewstyle));
    CHECK_FALSE(n.no_zeroes());
  }
  {
    Negotiator n(c, {});
    CHECK(n.on_client_flags(kClientFixedNewstyle | kClientNoZeroes));
    CHECK(n.no_zeroes());
  }
  CHECK_FALSE(Negotiator(c, {}).on_client_flags(0));
  CHECK_FALSE(Negotiator(c, {}).on_client_flags(kClientNoZeroes));
  CHECK_FALSE(Negotiator(c, {}).on_client_flags(kClientFixedNewstyle | 4));
  CHECK_FALSE(Negotiator(c, {}).on_client_flags(kClientFixedNewstyle | 0x80000000u));
  CHECK_FALSE(Negotiator(c, {}).on_client_flags(0xffffffffu));
}

// ---------------------------------------------------------------- EXPORT_NAME

TEST_CASE("EXPORT_NAME: size, flags, no padding with NO_ZEROES") {
  Fixture f;
  auto step = f.opt(kOptExportName, Builder().str("disk0"));
  CHECK(step.action == Action::kTransmission);
  Builder want;
  want.u64(1ull << 30).u16(kFlagHasFlags | (kDiskFlags & ~kFlagSendDf));
  CHECK(step.reply == want.bytes());
  CHECK(f.n.session().export_info.name == "disk0");
  CHECK(f.n.session().transmission_flags == (kFlagHasFlags | (kDiskFlags & ~kFlagSendDf)));
  CHECK_FALSE(f.n.session().structured_replies);
  CHECK(f.n.session().contexts.empty());
}

TEST_CASE("EXPORT_NAME: 124 zero bytes without NO_ZEROES") {
  Fixture f({}, kClientFixedNewstyle);
  auto step = f.opt(kOptExportName, Builder().str("disk0@s1"));
  CHECK(step.action == Action::kTransmission);
  REQUIRE(step.reply.size() == 8 + 2 + 124);
  CHECK(wire::load64(step.reply.data()) == 1ull << 30);
  CHECK(wire::load16(step.reply.data() + 8) == (kFlagHasFlags | kFlagReadOnly | kFlagCanMultiConn | kFlagSendCache));
  CHECK(std::all_of(step.reply.begin() + 10, step.reply.end(), [](uint8_t b) { return b == 0; }));
}

TEST_CASE("EXPORT_NAME: empty name is the default export") {
  Fixture f;
  auto step = f.opt(kOptExportName);
  CHECK(step.action == Action::kTransmission);
  CHECK(f.n.session().export_info.name == "disk0");
}

TEST_CASE("EXPORT_NAME: unknown export closes without a reply") {
  Fixture f;
  auto step = f.opt(kOptExportName, Builder().str("nope"));
  CHECK(step.action == Action::kClose);
  CHECK(step.reply.empty());
}

TEST_CASE("EXPORT_NAME: a 5000-byte name closes without a reply") {
  Fixture f;
  std::string name(5000, 'a');
  auto step = f.opt(kOptExportName, Builder().str(name));
  CHECK(step.action == Action::kClose);
  CHECK(step.reply.empty());
}

TEST_CASE("EXPORT_NAME keeps structured replies and the matching meta contexts") {
  Fixture f;
  f.structured();
  auto set = decode_contexts(f.replies(kOptSetMetaContext, meta_payload("disk0", {"base:allocation"})));
  REQUIRE(set.size() == 1);
  auto step = f.opt(kOptExportName, Builder().str("disk0"));
  CHECK(step.action == Action::kTransmission);
  CHECK(f.n.session().structured_replies);
  REQUIRE(f.n.session().contexts.size() == 1);
  CHECK(f.n.session().contexts[0].id == set[0].id);
  CHECK((wire::load16(step.reply.data() + 8) & kFlagSendDf) != 0);
}

// ---------------------------------------------------------------- ABORT

TEST_CASE("ABORT: ACK then close, payload ignored") {
  Fixture f;
  auto r = f.replies(kOptAbort, {}, Action::kClose);
  REQUIRE(r.size() == 1);
  CHECK(r[0].type == kRepAck);
  CHECK(r[0].data.empty());

  Fixture g;
  auto r2 = g.replies(kOptAbort, Builder().str("junk"), Action::kClose);
  REQUIRE(r2.size() == 1);
  CHECK(r2[0].type == kRepAck);
}

// ---------------------------------------------------------------- LIST

TEST_CASE("LIST: one SERVER reply per visible export, then ACK") {
  Fixture f;
  auto r = f.replies(kOptList);
  REQUIRE(r.size() == 3);  // "secret" is TLS-only: never shown to a plaintext client
  std::vector<std::string> names;
  for (size_t i = 0; i + 1 < r.size(); ++i) {
    REQUIRE(r[i].type == kRepServer);
    REQUIRE(r[i].data.size() >= 4);
    uint32_t len = wire::load32(r[i].data.data());
    CHECK(len == r[i].data.size() - 4);
    names.emplace_back(r[i].data.begin() + 4, r[i].data.end());
  }
  CHECK(r.back().type == kRepAck);
  CHECK(names == std::vector<std::string>{"disk0", "disk0@s1"});
}

TEST_CASE("LIST with data is ERR_INVALID, and the next option works") {
  Fixture f;
  f.expect_error(kOptList, Builder().u32(0), kRepErrInvalid);
  auto r = f.replies(kOptList);
  CHECK(r.back().type == kRepAck);
}

TEST_CASE("LIST on an empty catalog is a bare ACK") {
  FakeCatalog empty;
  Negotiator n(empty, {});
  REQUIRE(n.on_client_flags(kClientFixedNewstyle));
  auto step = n.on_option(kOptList, {});
  auto r = parse_replies(step.reply);
  REQUIRE(r.size() == 1);
  CHECK(r[0].type == kRepAck);
}

// ---------------------------------------------------------------- INFO / GO

TEST_CASE("GO: EXPORT info, BLOCK_SIZE always, ACK; session holds the export") {
  Fixture f;
  auto r = f.replies(kOptGo, info_payload("disk0@s1"), Action::kTransmission);
  Info info = decode_info(r);
  CHECK(info.acked);
  CHECK(info.export_count == 1);
  CHECK(info.size == (1ull << 30));
  CHECK(info.flags == (kFlagHasFlags | kFlagReadOnly | kFlagCanMultiConn | kFlagSendCache));
  REQUIRE(info.block);
  CHECK(*info.block == std::array<uint32_t, 3>{512, 65536, 1u << 20});
  CHECK_FALSE(info.name);         // not asked for
  CHECK_FALSE(info.description);  // not asked for
  const Session& s = f.n.session();
  CHECK(s.export_info.name == "disk0@s1");
  CHECK(s.export_info.min_block == 512);
  CHECK(s.transmission_flags == *info.flags);
  CHECK_FALSE(s.structured_replies);
  CHECK_FALSE(s.tls);
}

TEST_CASE("GO: NAME and DESCRIPTION when asked; unknown info requests ignored") {
  Fixture f;
  auto r = f.replies(kOptGo, info_payload("", {kInfoName, kInfoDescription, 77, kInfoBlockSize}),
                     Action::kTransmission);
  Info info = decode_info(r);
  CHECK(info.acked);
  CHECK(info.name == "disk0");  // the canonical name of the default export
  CHECK(info.description == "live disk");
  CHECK(info.block);
}

TEST_CASE("INFO: description omitted when empty; INFO continues") {
  Fixture f;
  auto r = f.replies(kOptInfo, info_payload("disk0@s1", {kInfoDescription, kInfoName}));
  Info info = decode_info(r);
  CHECK(info.acked);
  CHECK(info.name == "disk0@s1");
  CHECK_FALSE(info.description);
}

TEST_CASE("INFO then GO with the same parameters return identical information") {
  for (bool structured : {false, true}) {
    CAPTURE(structured);
    Fixture f;
    if (structured) f.structured();
    const Bytes p = info_payload("disk0", {kInfoBlockSize, kInfoName, kInfoDescription});
    auto info = f.replies(kOptInfo, p);
    auto go = f.replies(kOptGo, p, Action::kTransmission);
    REQUIRE(info.size() == go.size());
    for (size_t i = 0; i < info.size(); ++i) {
      CHECK(info[i].type == go[i].type);
      CHECK(info[i].data == go[i].data);
    }
    CHECK(decode_info(go).flags == f.n.session().transmission_flags);
  }
}

TEST_CASE("DF is advertised only with structured replies") {
  Fixture plain;
  CHECK_FALSE((*decode_info(plain.replies(kOptInfo, info_payload("disk0"))).flags & kFlagSendDf) != 0);
  Fixture sr;
  sr.structured();
  CHECK((*decode_info(sr.replies(kOptInfo, info_payload("disk0"))).flags & kFlagSendDf) != 0);
}

TEST_CASE("flags for features fleece does not negotiate are never advertised") {
  Fixture f;
  f.catalog.exports[0].transmission_flags |= kFlagSendResize | kFlagBlockStatusPayload;
  f.catalog.exports[1].transmission_flags |= kFlagSendFastZero;  // without WRITE_ZEROES
  auto a = decode_info(f.replies(kOptInfo, info_payload("disk0")));
  CHECK_FALSE((*a.flags & (kFlagSendResize | kFlagBlockStatusPayload)) != 0);
  CHECK((*a.flags & kFlagHasFlags) != 0);
  auto b = decode_info(f.replies(kOptInfo, info_payload("disk0@s1")));
  CHECK_FALSE((*b.flags & kFlagSendFastZero) != 0);
}

TEST_CASE("INFO/GO: unknown export is ERR_UNKNOWN with no INFO replies") {
  Fixture f;
  f.expect_error(kOptInfo, info_payload("nope"), kRepErrUnknown);
  f.expect_error(kOptGo, info_payload("nope", {kInfoName}), kRepErrUnknown);
}

TEST_CASE("INFO/GO: malformed payloads are ERR_INVALID and the next option works") {
  const Bytes cases[] = {
      Bytes{},                                             // empty
      Builder().u16(0).bytes(),                            // truncated name length
      Builder().u32(0).bytes(),                            // no request count
      Builder().u32(0).u8(0).bytes(),                      // half a request count
      Builder().u32(5).str("disk0").bytes(),               // name, no count
      Builder().u32(100).str("disk0").u16(0).bytes(),      // name length past the payload
      Builder().u32(0xffffffffu).str("disk0").u16(0).bytes(),  // hostile name length
      Builder().u32(0xfffffffcu).u16(0).bytes(),           // length that wraps 32-bit sums
      Builder().u32(5).str("disk0").u16(2).u16(kInfoName).bytes(),           // too few requests
      Builder().u32(5).str("disk0").u16(1).u16(kInfoName).u16(3).bytes(),    // too many
      Builder().u32(5).str("disk0").u16(0).u8(1).bytes(),                    // trailing byte
      Builder().u32(5).str("disk0").u16(0xffff).bytes(),                     // huge count
  };
  for (uint32_t opt : {uint32_t(kOptInfo), uint32_t(kOptGo)}) {
    for (const Bytes& p : cases) {
      CAPTURE(opt);
      CAPTURE(p.size());
      Fixture f;
      f.expect_error(opt, p, kRepErrInvalid);
      auto r = f.replies(kOptGo, info_payload("disk0"), Action::kTransmission);
      CHECK(decode_info(r).acked);
    }
  }
}

TEST_CASE("INFO/GO: a 5000-byte name is refused, not looked up") {
  Fixture f;
  std::string name(5000, 'n');
  f.catalog.exports[0].name = name;  // even if such an export existed
  f.expect_error(kOptGo, info_payload(name), kRepErrInvalid);
  f.expect_error(kOptInfo, info_payload(std::string(4097, 'n')), kRepErrInvalid);
}

TEST_CASE("INFO/GO: a name of exactly 4096 bytes is accepted") {
  Fixture f;
  std::string name(4096, 'n');
  f.catalog.exports[0].name = name;
  auto info = decode_info(f.replies(kOptGo, info_payload(name, {kInfoName}), Action::kTransmission));
  CHECK(info.name == name);
}

TEST_CASE("a long description is clipped to 4096 bytes on a UTF-8 boundary") {
  Fixture f;
  std::string d(4095, 'd');
  d += "\xc3\xa9";  // 'é' straddles byte 4096
  d += "tail";
  f.catalog.exports[0].description = d;
  auto info = decode_info(f.replies(kOptInfo, info_payload("disk0", {kInfoDescription})));
  REQUIRE(info.description);
  CHECK(info.description->size() == 4095);
  CHECK(*info.description == std::string(4095, 'd'));
}

// ---------------------------------------------------------------- STRUCTURED_REPLY

TEST_CASE("STRUCTURED_REPLY: ACK and remembered; with data ERR_INVALID") {
  Fixture f;
  f.expect_error(kOptStructuredReply, Builder().u8(0), kRepErrInvalid);
  f.replies(kOptGo, info_payload("disk0"), Action::kTransmission);
  CHECK_FALSE(f.n.session().structured_replies);

  Fixture g;
  g.structured();
  g.replies(kOptGo, info_payload("disk0"), Action::kTransmission);
  CHECK(g.n.session().structured_replies);
}

// ---------------------------------------------------------------- meta contexts

TEST_CASE("meta context options need structured replies first") {
  Fixture f;
  f.expect_error(kOptListMetaContext, meta_payload("disk0", {}), kRepErrInvalid);
  f.expect_error(kOptSetMetaContext, meta_payload("disk0", {"base:allocation"}), kRepErrInvalid);
  f.structured();
  auto r = f.replies(kOptListMetaContext, meta_payload("disk0", {}));
  CHECK(r.back().type == kRepAck);
}

TEST_CASE("LIST_META_CONTEXT without queries lists every context of the export, id 0") {
  Fixture f;
  f.structured();
  auto ctx = decode_contexts(f.replies(kOptListMetaContext, meta_payload("disk0", {})));
  CHECK(names_of(ctx) == std::vector<std::string>{"base:allocation", "qemu:allocation-depth",
                                                  "qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:b1"});
  for (auto& c : ctx) CHECK(c.id == 0);
  auto snap = decode_contexts(f.replies(kOptListMetaContext, meta_payload("disk0@s1", {})));
  CHECK(names_of(snap) == std::vector<std::string>{"base:allocation"});
}

TEST_CASE("LIST_META_CONTEXT: exact names and namespace prefixes") {
  Fixture f;
  f.structured();
  auto list = [&](std::vector<std::string> q) {
    return names_of(decode_contexts(f.replies(kOptListMetaContext, meta_payload("disk0", q))));
  };
  CHECK(list({"base:"}) == std::vector<std::string>{"base:allocation"});
  CHECK(list({"qemu:"}) == std::vector<std::string>{"qemu:allocation-depth", "qemu:dirty-bitmap:b0",
                                                    "qemu:dirty-bitmap:b1"});
  CHECK(list({"qemu:dirty-bitmap:"}) ==
        std::vector<std::string>{"qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:b1"});
  CHECK(list({"qemu:dirty-bitmap:b1"}) == std::vector<std::string>{"qemu:dirty-bitmap:b1"});
  CHECK(list({"base:allocation", "base:"}) == std::vector<std::string>{"base:allocation"});  // once
  CHECK(list({"nbd-server:", "x-foo:bar", "base:nothing", "qemu:dirty"}).empty());
  CHECK(list({"qemu:dirty-bitmap:b9"}).empty());
  CHECK(list({""}).empty());
}

TEST_CASE("SET_META_CONTEXT selects exact names only, with unique non-zero ids") {
  Fixture f;
  f.structured();
  auto ctx = decode_contexts(f.replies(
      kOptSetMetaContext,
      meta_payload("disk0", {"base:", "qemu:", "qemu:dirty-bitmap:", "base:allocation",
                             "qemu:dirty-bitmap:b1", "x-unknown:thing", "base:allocation"})));
  CHECK(names_of(ctx) == std::vector<std::string>{"base:allocation", "qemu:dirty-bitmap:b1"});
  std::set<uint32_t> ids;
  for (auto& c : ctx) {
    CHECK(c.id != 0);
    ids.insert(c.id);
  }
  CHECK(ids.size() == ctx.size());

  f.replies(kOptGo, info_payload("disk0"), Action::kTransmission);
  const Session& s = f.n.session();
  REQUIRE(s.contexts.size() == 2);
  CHECK(s.contexts[0].id == ctx[0].id);
  CHECK(s.contexts[0].name == "base:allocation");
  CHECK(s.contexts[1].id == ctx[1].id);
  CHECK(s.contexts[1].name == "qemu:dirty-bitmap:b1");
}

TEST_CASE("SET_META_CONTEXT replaces the selection; ids stay unique across calls") {
  Fixture f;
  f.structured();
  auto first = decode_contexts(f.replies(kOptSetMetaContext, meta_payload("disk0", {"base:allocation"})));
  auto second =
      decode_contexts(f.replies(kOptSetMetaContext, meta_payload("disk0", {"qemu:allocation-depth"})));
  REQUIRE(first.size() == 1);
  REQUIRE(second.size() == 1);
  CHECK(first[0].id != second[0].id);
  f.replies(kOptGo, info_payload("disk0"), Action::kTransmission);
  REQUIRE(f.n.session().contexts.size() == 1);
  CHECK(f.n.session().contexts[0].name == "qemu:allocation-depth");
}

TEST_CASE("SET_META_CONTEXT with no queries selects nothing") {
  Fixture f;
  f.structured();
  f.replies(kOptSetMetaContext, meta_payload("disk0", {"base:allocation"}));
  auto r = decode_contexts(f.replies(kOptSetMetaContext, meta_payload("disk0", {})));
  CHECK(r.empty());
  f.replies(kOptGo, info_payload("disk0"), Action::kTransmission);
  CHECK(f.n.session().contexts.empty());
}

TEST_CASE("a failing SET_META_CONTEXT still clears the previous selection") {
  const Bytes failing[] = {
      meta_payload("nope", {"base:allocation"}),        // unknown export
      Builder().u32(5).str("disk0").u32(1).bytes(),     // query missing
  };
  for (const Bytes& p : failing) {
    Fixture f;
    f.structured();
    REQUIRE(decode_contexts(f.replies(kOptSetMetaContext, meta_payload("disk0", {"base:allocation"})))
                .size() == 1);
    auto r = f.replies(kOptSetMetaContext, p);
    REQUIRE(r.size() == 1);
    CHECK((r[0].type & kRepErrBit) != 0);
    f.replies(kOptGo, info_payload("disk0"), Action::kTransmission);
    CHECK(f.n.session().contexts.empty());
  }
}

TEST_CASE("contexts reach the session only if SET named the export chosen by GO") {
  Fixture f;
  f.structured();
  f.replies(kOptSetMetaContext, meta_payload("disk0@s1", {"base:allocation"}));
  f.replies(kOptGo, info_payload("disk0"), Action::kTransmission);
  CHECK(f.n.session().contexts.empty());

  Fixture g;  // "" and "disk0" name the same export
  g.structured();
  g.replies(kOptSetMetaContext, meta_payload("", {"base:allocation"}));
  g.replies(kOptGo, info_payload("disk0"), Action::kTransmission);
  CHECK(g.n.session().contexts.size() == 1);
}

TEST_CASE("meta context: unknown export is ERR_UNKNOWN") {
  Fixture f;
  f.structured();
  f.expect_error(kOptListMetaContext, meta_payload("nope", {}), kRepErrUnknown);
  f.expect_error(kOptSetMetaContext, meta_payload("nope", {"base:allocation"}), kRepErrUnknown);
}

TEST_CASE("meta context: malformed and overrunning payloads are ERR_INVALID") {
  const Bytes cases[] = {
      Bytes{},
      Builder().u8(0).u8(0).bytes(),
      Builder().u32(5).str("disk0").bytes(),                                 // no count
      Builder().u32(50).str("disk0").u32(0).bytes(),                         // name overruns
      Builder().u32(0xffffffffu).u32(0).bytes(),                             // hostile name length
      Builder().u32(5).str("disk0").u32(1).bytes(),                          // query missing
      Builder().u32(5).str("disk0").u32(1).u32(100).str("base:").bytes(),    // query overruns
      Builder().u32(5).str("disk0").u32(1).u32(0xfffffff0u).str("base:").bytes(),
      Builder().u32(5).str("disk0").u32(2).u32(5).str("base:").bytes(),      // count too large
      Builder().u32(5).str("disk0").u32(0xffffffffu).u32(5).str("base:").bytes(),
      Builder().u32(5).str("disk0").u32(0).u8(9).bytes(),                    // trailing byte
      Builder().u32(5).str("disk0").u32(1).u32(5).str("base:").u16(0).bytes(),
      Builder().u32(5).str("disk0").u32(1).u32(4097).str(std::string(4097, 'q')).bytes(),
      Builder().u32(5000).str(std::string(5000, 'n')).u32(0).bytes(),        // 5000-byte name
  };
  for (uint32_t opt : {uint32_t(kOptListMetaContext), uint32_t(kOptSetMetaContext)}) {
    for (const Bytes& p : cases) {
      CAPTURE(opt);
      CAPTURE(p.size());
      Fixture f;
      f.structured();
      f.expect_error(opt, p, kRepErrInvalid);
      auto ok = decode_contexts(f.replies(kOptListMetaContext, meta_payload("disk0", {"base:"})));
      CHECK(ok.size() == 1);
    }
  }
}

// ---------------------------------------------------------------- unknown options

TEST_CASE("EXTENDED_HEADERS, PEEK_EXPORT and unknown options: ERR_UNSUP, then GO works") {
  Fixture f;
  f.expect_error(kOptExtendedHeaders, {}, kRepErrUnsup);
  f.expect_error(kOptPeekExport, Builder().str("x"), kRepErrUnsup);
  f.expect_error(12, Builder().str("whatever payload"), kRepErrUnsup);
  f.expect_error(0, {}, kRepErrUnsup);
  f.expect_error(0xffffffffu, {}, kRepErrUnsup);
  auto r = f.replies(kOptGo, info_payload("disk0"), Action::kTransmission);
  CHECK(decode_info(r).acked);
  CHECK(f.n.session().export_info.name == "disk0");
}

// ---------------------------------------------------------------- oversized options

TEST_CASE("oversized options: TOO_BIG for known, UNSUP for unknown, ABORT still ACKed") {
  Fixture f;
  for (uint32_t opt : {uint32_t(kOptList), uint32_t(kOptInfo), uint32_t(kOptGo),
                       uint32_t(kOptStructuredReply), uint32_t(kOptListMetaContext),
                       uint32_t(kOptSetMetaContext), uint32_t(kOptStartTls)}) {
    CAPTURE(opt);
    auto r = parse_replies(f.n.on_oversized_option(opt).reply);
    REQUIRE(r.size() == 1);
    CHECK(r[0].type == kRepErrTooBig);
    CHECK(r[0].option == opt);
  }
  auto u = parse_replies(f.n.on_oversized_option(99).reply);
  REQUIRE(u.size() == 1);
  CHECK(u[0].type == kRepErrUnsup);

  auto en = f.n.on_oversized_option(kOptExportName);
  CHECK(en.action == Action::kClose);
  CHECK(en.reply.empty());

  auto ab = f.n.on_oversized_option(kOptAbort);
  CHECK(ab.action == Action::kClose);
  CHECK(parse_replies(ab.reply).at(0).type == kRepAck);
}

TEST_CASE("an oversized SET_META_CONTEXT clears the selection") {
  Fixture f;
  f.structured();
  f.replies(kOptSetMetaContext, meta_payload("disk0", {"base:allocation"}));
  f.n.on_oversized_option(kOptSetMetaContext);
  f.replies(kOptGo, info_payload("disk0"), Action::kTransmission);
  CHECK(f.n.session().contexts.empty());
}

// ---------------------------------------------------------------- shutdown

TEST_CASE("shutting down: every option gets ERR_SHUTDOWN, ABORT its ACK") {
  Fixture f({.tls = TlsMode::off, .shutting_down = true});
  for (uint32_t opt : {uint32_t(kOptList), uint32_t(kOptInfo), uint32_t(kOptGo),
                       uint32_t(kOptStructuredReply), uint32_t(kOptListMetaContext),
                       uint32_t(kOptSetMetaContext), uint32_t(kOptStartTls), 99u}) {
    CAPTURE(opt);
    f.expect_error(opt, info_payload("disk0"), kRepErrShutdown);
  }
  auto en = f.opt(kOptExportName, Builder().str("disk0"));
  CHECK(en.action == Action::kClose);
  CHECK(en.reply.empty());
  CHECK(parse_replies(f.n.on_oversized_option(kOptGo).reply).at(0).type == kRepErrShutdown);
  auto r = f.replies(kOptAbort, {}, Action::kClose);
  CHECK(r.at(0).type == kRepAck);
}

// ---------------------------------------------------------------- TLS: off

TEST_CASE("TLS off: STARTTLS is ERR_POLICY, with data ERR_INVALID; never TLS_REQD") {
  Fixture f;
  f.expect_error(kOptStartTls, {}, kRepErrPolicy);
  f.expect_error(kOptStartTls, Builder().u8(1), kRepErrInvalid);
  // A TLS-only export is unreachable, and refused without TLS_REQD.
  f.expect_error(kOptInfo, info_payload("secret"), kRepErrPolicy);
  f.expect_error(kOptGo, info_payload("secret"), kRepErrPolicy);
  auto en = f.opt(kOptExportName, Builder().str("secret"));
  CHECK(en.action == Action::kClose);
  CHECK(en.reply.empty());
}

// ---------------------------------------------------------------- TLS: on (SELECTIVETLS)

TEST_CASE("TLS on: plaintext options work; a TLS-only export is TLS_REQD and hidden") {
  Fixture f({.tls = TlsMode::on});
  auto list = f.replies(kOptList);
  CHECK(list.size() == 3);  // disk0, disk0@s1, ACK
  f.expect_error(kOptInfo, info_payload("secret"), kRepErrTlsReqd);
  f.expect_error(kOptGo, info_payload("secret"), kRepErrTlsReqd);
  f.structured();
  f.expect_error(kOptListMetaContext, meta_payload("secret", {}), kRepErrUnknown);
  auto en = f.opt(kOptExportName, Builder().str("secret"));
  CHECK(en.action == Action::kClose);
  CHECK(en.reply.empty());
}

TEST_CASE("TLS on: plaintext GO of an ordinary export is allowed") {
  Fixture f({.tls = TlsMode::on});
  auto r = f.replies(kOptGo, info_payload("disk0"), Action::kTransmission);
  CHECK(decode_info(r).acked);
  CHECK_FALSE(f.n.session().tls);
}

TEST_CASE("TLS on: STARTTLS ACK, then the TLS-only export is reachable and listed") {
  Fixture f({.tls = TlsMode::on});
  auto r = f.replies(kOptStartTls, {}, Action::kStartTls);
  REQUIRE(r.size() == 1);
  CHECK(r[0].type == kRepAck);
  f.n.on_tls_established();
  CHECK(f.n.tls_active());
  CHECK(f.replies(kOptList).size() == 4);
  auto go = f.replies(kOptGo, info_payload("secret", {kInfoDescription}), Action::kTransmission);
  CHECK(decode_info(go).description == "tls only");
  CHECK(f.n.session().tls);
  CHECK(f.n.session().export_info.name == "secret");
}

TEST_CASE("a second STARTTLS after TLS is ERR_INVALID") {
  for (TlsMode mode : {TlsMode::on, TlsMode::require}) {
    Fixture f({.tls = mode});
    f.replies(kOptStartTls, {}, Action::kStartTls);
    f.n.on_tls_established();
    f.expect_error(kOptStartTls, {}, kRepErrInvalid);
  }
}

TEST_CASE("STARTTLS with data is ERR_INVALID in every mode") {
  for (TlsMode mode : {TlsMode::off, TlsMode::on, TlsMode::require}) {
    Fixture f({.tls = mode});
    f.expect_error(kOptStartTls, Builder().str("x"), kRepErrInvalid);
  }
}

TEST_CASE("TLS established wipes structured replies and meta contexts") {
  Fixture f({.tls = TlsMode::on});
  f.structured();
  f.replies(kOptSetMetaContext, meta_payload("disk0", {"base:allocation"}));
  f.replies(kOptStartTls, {}, Action::kStartTls);
  f.n.on_tls_established();
  // Meta context options need structured replies again.
  f.expect_error(kOptSetMetaContext, meta_payload("disk0", {"base:allocation"}), kRepErrInvalid);
  auto r = f.replies(kOptGo, info_payload("disk0"), Action::kTransmission);
  CHECK_FALSE((*decode_info(r).flags & kFlagSendDf) != 0);
  CHECK_FALSE(f.n.session().structured_replies);
  CHECK(f.n.session().contexts.empty());
  CHECK(f.n.session().tls);
}

TEST_CASE("after TLS, structured replies and contexts can be negotiated again") {
  Fixture f({.tls = TlsMode::on});
  f.structured();
  auto before = decode_contexts(f.replies(kOptSetMetaContext, meta_payload("disk0", {"base:allocation"})));
  f.replies(kOptStartTls, {}, Action::kStartTls);
  f.n.on_tls_established();
  f.structured();
  auto after = decode_contexts(f.replies(kOptSetMetaContext, meta_payload("disk0", {"base:allocation"})));
  REQUIRE(after.size() == 1);
  CHECK(after[0].id != before.at(0).id);
  f.replies(kOptGo, info_payload("disk0"), Action::kTransmission);
  REQUIRE(f.n.session().contexts.size() == 1);
  CHECK(f.n.session().contexts[0].id == after[0].id);
  CHECK(f.n.session().structured_replies);
}

// ---------------------------------------------------------------- TLS: require (FORCEDTLS)

TEST_CASE("TLS require: before TLS every option but STARTTLS and ABORT is TLS_REQD") {
  Fixture f({.tls = TlsMode::require});
  for (uint32_t opt : {uint32_t(kOptList), uint32_t(kOptInfo), uint32_t(kOptGo),
                       uint32_t(kOptStructuredReply), uint32_t(kOptListMetaContext),
                       uint32_t(kOptSetMetaContext), uint32_t(kOptExtendedHeaders), 99u}) {
    CAPTURE(opt);
    f.expect_error(opt, info_payload("disk0"), kRepErrTlsReqd);
  }
  CHECK(parse_replies(f.n.on_oversized_option(kOptInfo).reply).at(0).type == kRepErrTlsReqd);
  auto en = f.opt(kOptExportName, Builder().str("disk0"));
  CHECK(en.action == Action::kClose);
  CHECK(en.reply.empty());
}

TEST_CASE("TLS require: ABORT is ACKed before TLS") {
  Fixture f({.tls = TlsMode::require});
  auto r = f.replies(kOptAbort, {}, Action::kClose);
  CHECK(r.at(0).type == kRepAck);
}

TEST_CASE("TLS require: after TLS no option gets TLS_REQD") {
  Fixture f({.tls = TlsMode::require});
  f.replies(kOptStartTls, {}, Action::kStartTls);
  f.n.on_tls_established();
  CHECK(f.replies(kOptList).back().type == kRepAck);
  f.structured();
  CHECK(decode_contexts(f.replies(kOptListMetaContext, meta_payload("secret", {}))).size() == 1);
  f.expect_error(99, {}, kRepErrUnsup);
  auto r = f.replies(kOptGo, info_payload("secret"), Action::kTransmission);
  CHECK(decode_info(r).acked);
  CHECK(f.n.session().tls);
  CHECK(f.n.session().structured_replies);
}

TEST_CASE("TLS require: EXPORT_NAME after TLS enters transmission") {
  Fixture f({.tls = TlsMode::require}, kClientFixedNewstyle);
  f.replies(kOptStartTls, {}, Action::kStartTls);
  f.n.on_tls_established();
  auto step = f.opt(kOptExportName, Builder().str("secret"));
  CHECK(step.action == Action::kTransmission);
  CHECK(step.reply.size() == 134);
  CHECK(f.n.session().tls);
}

// ---------------------------------------------------------------- sequences

TEST_CASE("a long hostile sequence leaves the negotiator usable") {
  Fixture f({.tls = TlsMode::on});
  f.expect_error(kOptSetMetaContext, meta_payload("disk0", {"base:allocation"}), kRepErrInvalid);
  f.expect_error(kOptInfo, Builder().u32(0xffffffffu).bytes(), kRepErrInvalid);
  f.expect_error(77, Bytes(1000, 0xff), kRepErrUnsup);
  f.expect_error(kOptList, Builder().str("x"), kRepErrInvalid);
  f.n.on_oversized_option(kOptGo);
  f.structured();
  f.expect_error(kOptListMetaContext, Builder().u32(5).str("disk0").u32(3).bytes(), kRepErrInvalid);
  f.expect_error(kOptGo, info_payload("missing"), kRepErrUnknown);
  f.replies(kOptSetMetaContext, meta_payload("disk0", {"qemu:dirty-bitmap:b0"}));
  auto r = f.replies(kOptGo, info_payload("disk0", {kInfoBlockSize}), Action::kTransmission);
  CHECK(decode_info(r).acked);
  const Session& s = f.n.session();
  CHECK(s.structured_replies);
  REQUIRE(s.contexts.size() == 1);
  CHECK(s.contexts[0].name == "qemu:dirty-bitmap:b0");
  CHECK(s.transmission_flags == (kFlagHasFlags | kDiskFlags));
}
