// Option haggling as a state machine, without I/O.
//
// The server reads the greeting answer and each option, hands them here, and
// sends what comes back. The negotiator owns every rule of the handshake
// phase: which options are valid when, what STARTTLS wipes, how meta context
// queries match, which info replies GO sends, when the client must be dropped.
//
//   Negotiator n(catalog, {.tls = TlsMode::off});
//   if (!n.on_client_flags(flags)) drop();
//   loop: read header; if header.length > kDropOptionLength: drop();
//         if header.length > kMaxOptionLength: drain; send(n.on_oversized_option(opt));
//         else step = n.on_option(opt, payload); send(step.reply); act on step.action.
//
// Policy where the spec leaves a choice:
//  * Error replies carry a one-line message as data.
//  * A tls_only export is unreachable until TLS is up, whatever the mode: hidden
//    from LIST, INFO/GO get TLS_REQD (POLICY when TLS is off, which must never
//    answer TLS_REQD), EXPORT_NAME closes, meta context options get UNKNOWN.
//  * Shutting down: ERR_SHUTDOWN to everything but ABORT (still ACKed).
//  * INFO/GO always send EXPORT and BLOCK_SIZE; NAME and DESCRIPTION when asked.
//  * Advertised flags: export flags | HAS_FLAGS, without DF unless structured
//    replies, FAST_ZERO unless WRITE_ZEROES, RESIZE and BLOCK_STATUS_PAYLOAD.
//  * Meta context queries: an exact context name; for LIST also a namespace
//    prefix ending in ':' ("base:", "qemu:", "qemu:dirty-bitmap:") matching every
//    context in it, and no query at all listing everything. SET takes exact
//    names only; anything unmatched is ignored. LIST replies carry id 0; SET
//    ids are non-zero and never reused on one connection.
//  * Oversized options: TOO_BIG for known options, UNSUP for unknown ones.
#pragma once

#include "nbd/export_info.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace fleece::nbd {

enum class TlsMode { off, on, require };

struct NegotiatorConfig {
  TlsMode tls = TlsMode::off;
  bool shutting_down = false;  // every option then gets NBD_REP_ERR_SHUTDOWN
};

struct MetaContext {
  uint32_t id = 0;
  std::string name;
};

// What transmission starts with once negotiation ends.
struct Session {
  ExportInfo export_info;
  uint16_t transmission_flags = 0;  // as sent to the client, HAS_FLAGS included
  bool structured_replies = false;
  std::vector<MetaContext> contexts;  // empty unless SET_META_CONTEXT chose this export
  bool tls = false;
};

class Negotiator {
 public:
  enum class Action {
    kContinue,      // send reply, read the next option
    kStartTls,      // send reply (the ACK), run the TLS handshake, then call on_tls_established()
    kTransmission,  // send reply, then serve session()
    kClose,         // send reply (may be empty), then close the connection
  };
  struct Step {
    std::vector<uint8_t> reply;
    Action action = Action::kContinue;
  };

  Negotiator(const ExportCatalog& catalog, NegotiatorConfig config);

  // The 32-bit client flags after the greeting. false: drop the connection
  // (unknown bits, or no FIXED_NEWSTYLE).
  bool on_client_flags(uint32_t flags);
  bool no_zeroes() const { return no_zeroes_; }

  // One option whose payload has been read completely.
  Step on_option(uint32_t option, std::span<const uint8_t> payload);
  // An option whose payload (over kMaxOptionLength) the server drained unread.
  Step on_oversized_option(uint32_t option);
  // STARTTLS completed: negotiation state is wiped as the spec requires.
  void on_tls_established();

  const Session& session() const { return session_; }

  // Whether STARTTLS has completed on this connection.
  bool tls_active() const { return tls_active_; }

 private:
  // Implementation state; see negotiation.cpp.
  std::optional<Step> gatekeep(uint32_t option);  // shutdown and TLS-require answers
  Step export_name(std::span<const uint8_t> payload);
  Step list(std::span<const uint8_t> payload);
  Step start_tls(std::span<const uint8_t> payload);
  Step structured_reply(std::span<const uint8_t> payload);
  Step info_or_go(uint32_t option, std::span<const uint8_t> payload);
  Step meta_context(uint32_t option, std::span<const uint8_t> payload);
  uint16_t transmission_flags(const ExportInfo& e) const;
  bool hidden_without_tls(const ExportInfo& e) const;
  void enter_transmission(ExportInfo e, uint16_t flags);

  const ExportCatalog& catalog_;
  NegotiatorConfig config_;
  bool no_zeroes_ = false;
  bool tls_active_ = false;
  bool structured_ = false;
  bool meta_set_ = false;            // a SET_META_CONTEXT succeeded since the last reset
  std::string meta_export_;          // export named by the last SET_META_CONTEXT
  std::vector<MetaContext> meta_;    // contexts it selected
  uint32_t next_context_id_ = 1;
  Session session_;
};

}  // namespace fleece::nbd
