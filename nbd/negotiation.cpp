// Option haggling rules (see negotiation.hpp and doc/proto.md of the NBD
// project, "Option types" and "TLS support").
#include "nbd/negotiation.hpp"

#include "nbd/constants.hpp"
#include "nbd/handshake.hpp"
#include "nbd/names.hpp"
#include "nbd/wire.hpp"
#include "util/log.hpp"

#include <algorithm>
#include <optional>
#include <string_view>

namespace fleece::nbd {

namespace {

using Bytes = std::vector<uint8_t>;

void append(Bytes& out, const Bytes& more) { out.insert(out.end(), more.begin(), more.end()); }

std::span<const uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Cuts a string to the spec's 4096-byte limit without splitting a UTF-8 sequence.
std::string_view clip_string(std::string_view s) {
  if (s.size() <= kMaxStringLength) return s;
  size_t n = kMaxStringLength;
  while (n > 0 && (uint8_t(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

// A bounds-checked reader over an option payload: every read either succeeds
// completely or marks the reader failed, so hostile lengths cannot overrun.
class PayloadReader {
 public:
  explicit PayloadReader(std::span<const uint8_t> p) : p_(p) {}
  std::optional<uint32_t> u32() {
    if (left() < 4) return fail<uint32_t>();
    uint32_t v = wire::load32(p_.data() + pos_);
    pos_ += 4;
    return v;
  }
  std::optional<uint16_t> u16() {
    if (left() < 2) return fail<uint16_t>();
    uint16_t v = wire::load16(p_.data() + pos_);
    pos_ += 2;
    return v;
  }
  std::optional<std::string_view> str(size_t n) {
    if (left() < n) return fail<std::string_view>();
    std::string_view v(reinterpret_cast<const char*>(p_.data() + pos_), n);
    pos_ += n;
    return v;
  }
  size_t left() const { return p_.size() - pos_; }

 private:
  template <class T>
  std::optional<T> fail() {
    pos_ = p_.size();
    return std::nullopt;
  }
  std::span<const uint8_t> p_;
  size_t pos_ = 0;
};

Negotiator::Step reply(uint32_t option, uint32_t type, Negotiator::Action action =
                                                           Negotiator::Action::kContinue) {
  return {encode_option_reply(option, type), action};
}

Negotiator::Step error(uint32_t option, uint32_t type, std::string_view message) {
  FLEECE_LOG_DEBUG("nbd", "option {} refused: {}", option_name(option), message);
  return {encode_option_reply(option, type, as_bytes(message)), Negotiator::Action::kContinue};
}

Negotiator::Step close_silently(std::string_view why) {
  FLEECE_LOG_DEBUG("nbd", "closing during negotiation: {}", why);
  return {{}, Negotiator::Action::kClose};
}

Bytes info_reply(uint32_t option, uint16_t type, std::span<const uint8_t> body) {
  Bytes data(2 + body.size());
  wire::store16(data.data(), type);
  if (!body.empty()) std::memcpy(data.data() + 2, body.data(), body.size());
  return encode_option_reply(option, kRepInfo, data);
}

Bytes meta_context_reply(uint32_t option, uint32_t id, std::string_view name) {
  Bytes data(4 + name.size());
  wire::store32(data.data(), id);
  std::memcpy(data.data() + 4, name.data(), name.size());
  return encode_option_reply(option, kRepMetaContext, data);
}

}  // namespace

Negotiator::Negotiator(const ExportCatalog& catalog, NegotiatorConfig config)
    : catalog_(catalog), config_(config) {}

bool Negotiator::on_client_flags(uint32_t flags) {
  constexpr uint32_t known = kClientFixedNewstyle | kClientNoZeroes;
  if ((flags & ~known) != 0 || (flags & kClientFixedNewstyle) == 0) return false;
  no_zeroes_ = (flags & kClientNoZeroes) != 0;
  return true;
}

void Negotiator::on_tls_established() {
  // proto.md, NBD_OPT_STARTTLS: the server MUST NOT preserve any negotiation
  // state issued before the upgrade.
  tls_active_ = true;
  structured_ = false;
  meta_set_ = false;
  meta_export_.clear();
  meta_.clear();
}

uint16_t Negotiator::transmission_flags(const ExportInfo& e) const {
  // Features fleece cannot honour on this connection are never advertised:
  // DF needs structured replies, FAST_ZERO needs WRITE_ZEROES, and RESIZE and
  // BLOCK_STATUS_PAYLOAD belong to extensions fleece does not negotiate.
  uint16_t flags = e.transmission_flags | kFlagHasFlags;
  if (!structured_) flags &= ~kFlagSendDf;
  if (!(flags & kFlagSendWriteZeroes)) flags &= ~kFlagSendFastZero;
  flags &= ~(kFlagSendResize | kFlagBlockStatusPayload);
  return flags;
}

bool Negotiator::hidden_without_tls(const ExportInfo& e) const {
  // Also with TLS off: a TLS-only export is then unreachable, never served in
  // plaintext.
  return e.tls_only && !tls_active_;
}

Negotiator::Step Negotiator::on_option(uint32_t option, std::span<const uint8_t> payload) {
  if (auto early = gatekeep(option)) return std::move(*early);
  switch (option) {
    case kOptExportName: return export_name(payload);
    case kOptAbort: return reply(option, kRepAck, Action::kClose);
    case kOptList: return list(payload);
    case kOptStartTls: return start_tls(payload);
    case kOptInfo:
    case kOptGo: return info_or_go(option, payload);
    case kOptStructuredReply: return structured_reply(payload);
    case kOptListMetaContext:
    case kOptSetMetaContext: return meta_context(option, payload);
    default: return error(option, kRepErrUnsup, "option not supported by fleece");
  }
}

Negotiator::Step Negotiator::on_oversized_option(uint32_t option) {
  if (auto early = gatekeep(option)) return std::move(*early);
  switch (option) {
    case kOptExportName: return close_silently("export name too long");
    case kOptAbort: return reply(option, kRepAck, Action::kClose);
    case kOptSetMetaContext:
      meta_set_ = false;  // SET replaces the selection even when it fails
      meta_export_.clear();
      meta_.clear();
      return error(option, kRepErrTooBig, "option data too large");
    case kOptList:
    case kOptStartTls:
    case kOptInfo:
    case kOptGo:
    case kOptStructuredReply:
    case kOptListMetaContext: return error(option, kRepErrTooBig, "option data too large");
    default: return error(option, kRepErrUnsup, "option not supported by fleece");
  }
}

std::optional<Negotiator::Step> Negotiator::gatekeep(uint32_t option) {
  if (config_.shutting_down) {
    // proto.md: further options other than ABORT get ERR_SHUTDOWN; ABORT
    // still gets its ACK. EXPORT_NAME cannot be errored, only refused.
    if (option == kOptAbort) return reply(option, kRepAck, Action::kClose);
    if (option == kOptExportName) return close_silently("server shutting down");
    return error(option, kRepErrShutdown, "server is shutting down");
  }
  if (config_.tls == TlsMode::require && !tls_active_ && option != kOptStartTls &&
      option != kOptAbort) {
    if (option == kOptExportName) return close_silently("TLS required before EXPORT_NAME");
    return error(option, kRepErrTlsReqd, "TLS required: send NBD_OPT_STARTTLS first");
  }
  return std::nullopt;
}

Negotiator::Step Negotiator::export_name(std::span<const uint8_t> payload) {
  if (payload.size() > kMaxStringLength) return close_silently("export name too long");
  std::string_view name(reinterpret_cast<const char*>(payload.data()), payload.size());
  std::optional<ExportInfo> e = catalog_.find(name);
  if (!e) return close_silently("unknown export");
  if (hidden_without_tls(*e)) return close_silently("export requires TLS");

  const uint16_t flags = transmission_flags(*e);
  Bytes out(10 + (no_zeroes_ ? 0 : 124), 0);
  wire::store64(out.data(), e->size);
  wire::store16(out.data() + 8, flags);
  enter_transmission(std::move(*e), flags);
  return {std::move(out), Action::kTransmission};
}

Negotiator::Step Negotiator::list(std::span<const uint8_t> payload) {
  if (!payload.empty()) return error(kOptList, kRepErrInvalid, "NBD_OPT_LIST carries no data");
  Bytes out;
  for (const ExportInfo& e : catalog_.list()) {
    // SELECTIVETLS may hide TLS-only exports; fleece does, so that a
    // plaintext client cannot enumerate them.
    if (hidden_without_tls(e)) continue;
    std::string_view name = clip_string(e.name);
    Bytes data(4 + name.size());
    wire::store32(data.data(), uint32_t(name.size()));
    std::memcpy(data.data() + 4, name.data(), name.size());
    append(out, encode_option_reply(kOptList, kRepServer, data));
  }
  append(out, encode_option_reply(kOptList, kRepAck));
  return {std::move(out), Action::kContinue};
}

Negotiator::Step Negotiator::start_tls(std::span<const uint8_t> payload) {
  if (!payload.empty())
    return error(kOptStartTls, kRepErrInvalid, "NBD_OPT_STARTTLS carries no data");
  if (config_.tls == TlsMode::off)
    return error(kOptStartTls, kRepErrPolicy, "TLS is not enabled on this server");
  if (tls_active_) return error(kOptStartTls, kRepErrInvalid, "TLS is already active");
  return reply(kOptStartTls, kRepAck, Action::kStartTls);
}

Negotiator::Step Negotiator::structured_reply(std::span<const uint8_t> payload) {
  if (!payload.empty())
    return error(kOptStructuredReply, kRepErrInvalid, "NBD_OPT_STRUCTURED_REPLY carries no data");
  structured_ = true;
  return reply(kOptStructuredReply, kRepAck);
}

Negotiator::Step Negotiator::info_or_go(uint32_t option, std::span<const uint8_t> payload) {
  // Data: name length (4), name, number of info requests (2), requests (2 each).
  PayloadReader in(payload);
  std::optional<uint32_t> name_len = in.u32();
  if (!name_len) return error(option, kRepErrInvalid, "option data too short");
  if (*name_len > kMaxStringLength) return error(option, kRepErrInvalid, "export name too long");
  std::optional<std::string_view> name = in.str(*name_len);
  std::optional<uint16_t> count = name ? in.u16() : std::nullopt;
  if (!count) return error(option, kRepErrInvalid, "export name overruns the option data");
  if (in.left() != size_t(*count) * 2)
    return error(option, kRepErrInvalid, "information request count does not match the data");
  bool want_name = false, want_description = false;
  for (uint16_t i = 0; i < *count; ++i) {
    switch (*in.u16()) {
      case kInfoName: want_name = true; break;
      case kInfoDescription: want_description = true; break;
      default: break;  // EXPORT and BLOCK_SIZE are always sent; unknown ones are ignored
    }
  }

  std::optional<ExportInfo> e = catalog_.find(*name);
  if (!e) return error(option, kRepErrUnknown, "no export by that name");
  if (hidden_without_tls(*e)) {
    // NOTLS mode must never answer TLS_REQD (proto.md, "NOTLS mode").
    if (config_.tls == TlsMode::off)
      return error(option, kRepErrPolicy, "export requires TLS, which this server does not offer");
    return error(option, kRepErrTlsReqd, "export requires TLS");
  }

  const uint16_t flags = transmission_flags(*e);
  Bytes out;
  {
    uint8_t body[10];
    wire::store64(body, e->size);
    wire::store16(body + 8, flags);
    append(out, info_reply(option, kInfoExport, body));
  }
  if (want_name) append(out, info_reply(option, kInfoName, as_bytes(clip_string(e->name))));
  if (want_description && !e->description.empty())
    append(out, info_reply(option, kInfoDescription, as_bytes(clip_string(e->description))));
  {
    // Always sent: a client that did not ask may ignore it, and one that did
    // learns the limits validate() enforces.
    uint8_t body[12];
    wire::store32(body, e->min_block);
    wire::store32(body + 4, e->preferred_block);
    wire::store32(body + 8, e->max_block);
    append(out, info_reply(option, kInfoBlockSize, body));
  }
  append(out, encode_option_reply(option, kRepAck));
  if (option == kOptInfo) return {std::move(out), Action::kContinue};
  enter_transmission(std::move(*e), flags);
  return {std::move(out), Action::kTransmission};
}

Negotiator::Step Negotiator::meta_context(uint32_t option, std::span<const uint8_t> payload) {
  const bool set = option == kOptSetMetaContext;
  if (set) {  // SET replaces the whole selection, even when it then fails
    meta_set_ = false;
    meta_export_.clear();
    meta_.clear();
  }
  if (!structured_)
    return error(option, kRepErrInvalid, "negotiate NBD_OPT_STRUCTURED_REPLY first");

  // Data: name length (4), name, number of queries (4), each: length (4), query.
  PayloadReader in(payload);
  std::optional<uint32_t> name_len = in.u32();
  if (!name_len) return error(option, kRepErrInvalid, "option data too short");
  if (*name_len > kMaxStringLength) return error(option, kRepErrInvalid, "export name too long");
  std::optional<std::string_view> name = in.str(*name_len);
  std::optional<uint32_t> count = name ? in.u32() : std::nullopt;
  if (!count) return error(option, kRepErrInvalid, "export name overruns the option data");
  if (size_t(*count) > in.left() / 4)
    return error(option, kRepErrInvalid, "query count overruns the option data");
  std::vector<std::string_view> queries;
  for (uint32_t i = 0; i < *count; ++i) {
    std::optional<uint32_t> len = in.u32();
    if (!len) return error(option, kRepErrInvalid, "query overruns the option data");
    if (*len > kMaxStringLength) return error(option, kRepErrInvalid, "query too long");
    std::optional<std::string_view> q = in.str(*len);
    if (!q) return error(option, kRepErrInvalid, "query overruns the option data");
    queries.push_back(*q);
  }
  if (in.left() != 0) return error(option, kRepErrInvalid, "trailing bytes after the queries");

  std::optional<ExportInfo> e = catalog_.find(*name);
  // A TLS-only export is as unknown as a missing one to a plaintext client:
  // SELECTIVETLS allows TLS_REQD only for INFO, GO and EXPORT_NAME.
  if (!e || hidden_without_tls(*e)) return error(option, kRepErrUnknown, "no export by that name");

  // Contexts the export offers that the queries match, each once, in the
  // export's order. LIST: no queries lists all, "ns:" lists a namespace.
  // SET: exact names only; anything else is ignored, as the spec requires.
  std::vector<std::string_view> chosen;
  for (const std::string& ctx : e->meta_contexts) {
    const bool match =
        (!set && queries.empty()) ||
        std::any_of(queries.begin(), queries.end(), [&](std::string_view q) {
          if (q == ctx) return true;
          return !set && !q.empty() && q.back() == ':' && std::string_view(ctx).starts_with(q);
        });
    if (match) chosen.push_back(ctx);
  }

  Bytes out;
  if (set) {
    meta_set_ = true;
    meta_export_ = e->name;
    for (std::string_view ctx : chosen) {
      MetaContext m{next_context_id_++, std::string(ctx)};
      if (next_context_id_ == 0) next_context_id_ = 1;  // ids stay non-zero
      append(out, meta_context_reply(option, m.id, m.name));
      meta_.push_back(std::move(m));
    }
  } else {
    // proto.md: the id in LIST replies is reserved and SHOULD be zero.
    for (std::string_view ctx : chosen) append(out, meta_context_reply(option, 0, ctx));
  }
  append(out, encode_option_reply(option, kRepAck));
  return {std::move(out), Action::kContinue};
}

void Negotiator::enter_transmission(ExportInfo e, uint16_t flags) {
  session_.structured_replies = structured_;
  session_.transmission_flags = flags;
  session_.tls = tls_active_;
  // BLOCK_STATUS is allowed only if the last SET_META_CONTEXT named this export.
  session_.contexts.clear();
  if (structured_ && meta_set_ && meta_export_ == e.name) session_.contexts = meta_;
  session_.export_info = std::move(e);
}

}  // namespace fleece::nbd
