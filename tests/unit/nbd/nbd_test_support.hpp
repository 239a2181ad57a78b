// Helpers for the nbd unit tests: byte builders, an option-reply parser and
// a small in-memory export catalog.
#pragma once

#include "nbd/constants.hpp"
#include "nbd/export_info.hpp"
#include "nbd/wire.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fleece::nbd::test {

using Bytes = std::vector<uint8_t>;

// Big-endian byte builder.
class Builder {
 public:
  Builder& u8(uint8_t v) { b_.push_back(v); return *this; }
  Builder& u16(uint16_t v) { b_.push_back(uint8_t(v >> 8)); b_.push_back(uint8_t(v)); return *this; }
  Builder& u32(uint32_t v) { u16(uint16_t(v >> 16)); return u16(uint16_t(v)); }
  Builder& u64(uint64_t v) { u32(uint32_t(v >> 32)); return u32(uint32_t(v)); }
  Builder& str(std::string_view s) { b_.insert(b_.end(), s.begin(), s.end()); return *this; }
  Builder& zeroes(size_t n) { b_.insert(b_.end(), n, 0); return *this; }
  const Bytes& bytes() const { return b_; }
  operator std::span<const uint8_t>() const { return b_; }

 private:
  Bytes b_;
};

inline std::string as_string(std::span<const uint8_t> b) { return {b.begin(), b.end()}; }

// One option reply as it appears on the wire.
struct OptReply {
  uint32_t option = 0;
  uint32_t type = 0;
  Bytes data;
  std::string text() const { return as_string(data); }
};

// Splits a stream of option replies; fails the test on any framing error.
inline std::vector<OptReply> parse_replies(std::span<const uint8_t> in) {
  std::vector<OptReply> out;
  size_t pos = 0;
  while (pos < in.size()) {
    REQUIRE(in.size() - pos >= 20);
    REQUIRE(wire::load64(in.data() + pos) == kOptReplyMagic);
    OptReply r;
    r.option = wire::load32(in.data() + pos + 8);
    r.type = wire::load32(in.data() + pos + 12);
    uint32_t len = wire::load32(in.data() + pos + 16);
    REQUIRE(in.size() - pos - 20 >= len);
    r.data.assign(in.begin() + pos + 20, in.begin() + pos + 20 + len);
    pos += 20 + len;
    out.push_back(std::move(r));
  }
  return out;
}

// Catalog with a fixed set of exports; "" resolves to the first one.
class FakeCatalog : public ExportCatalog {
 public:
  std::vector<ExportInfo> exports;
  std::optional<ExportInfo> find(std::string_view name) const override {
    if (name.empty() && !exports.empty()) return exports.front();
    for (const auto& e : exports)
      if (e.name == name) return e;
    return std::nullopt;
  }
  std::vector<ExportInfo> list() const override { return exports; }
};

inline FakeCatalog standard_catalog() {
  FakeCatalog c;
  ExportInfo disk;
  disk.name = "disk0";
  disk.description = "live disk";
  disk.size = 1ull << 30;
  disk.transmission_flags = kFlagSendFlush | kFlagSendFua | kFlagSendTrim | kFlagSendWriteZeroes |
                            kFlagSendDf | kFlagCanMultiConn | kFlagSendCache | kFlagSendFastZero;
  disk.min_block = 1;
  disk.preferred_block = 4096;
  disk.max_block = 32u << 20;
  disk.meta_contexts = {"base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b0",
                        "qemu:dirty-bitmap:b1"};
  c.exports.push_back(disk);

  ExportInfo snap;
  snap.name = "disk0@s1";
  snap.size = 1ull << 30;
  snap.transmission_flags = kFlagReadOnly | kFlagSendDf | kFlagCanMultiConn | kFlagSendCache;
  snap.min_block = 512;
  snap.preferred_block = 65536;
  snap.max_block = 1u << 20;
  snap.meta_contexts = {"base:allocation"};
  c.exports.push_back(snap);

  ExportInfo secret;
  secret.name = "secret";
  secret.description = "tls only";
  secret.size = 4096;
  secret.transmission_flags = kFlagSendFlush;
  secret.meta_contexts = {"base:allocation"};
  secret.tls_only = true;
  c.exports.push_back(secret);
  return c;
}

// INFO/GO payload: name length, name, request count, requests.
inline Bytes info_payload(std::string_view name, std::vector<uint16_t> requests = {}) {
  Builder b;
  b.u32(uint32_t(name.size())).str(name).u16(uint16_t(requests.size()));
  for (uint16_t r : requests) b.u16(r);
  return b.bytes();
}

// LIST/SET_META_CONTEXT payload: name length, name, query count, queries.
inline Bytes meta_payload(std::string_view name, std::vector<std::string> queries) {
  Builder b;
  b.u32(uint32_t(name.size())).str(name).u32(uint32_t(queries.size()));
  for (const auto& q : queries) b.u32(uint32_t(q.size())).str(q);
  return b.bytes();
}

}  // namespace fleece::nbd::test
