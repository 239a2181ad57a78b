// The STARTTLS upgrade of a connection, for the connection code only.
//
// This header pulls in Asio's ssl error codes; include it from
// server/connection.cpp (and tests), nowhere else. The connection upgrades
// in place with tls/upgradable_stream.hpp; a standalone stream works too:
//
//   auto creds = tls_context.current();          // keep it as long as the stream
//   tls::Stream<tcp::socket> stream(std::move(socket), *creds);
//   auto peer = co_await tls::accept(stream, "10.0.0.7:51234", 10s);
//   if (!peer) { close; }                        // already logged, naming the peer
//   negotiator.on_tls_established(); ... serve over `stream` ...
//
// accept() runs the server side of the handshake within `timeout` (a client
// that stalls mid-handshake is cut off), then authorizes the peer against
// --tls-authz. Every outcome is logged once with the peer's address: success
// at info (identity, protocol, cipher), failure at warn (why). The error is
// std::errc::timed_out, std::errc::permission_denied (authz) or
// std::errc::connection_aborted (handshake failed); the caller just closes.
#pragma once

#include "tls/server_context.hpp"
#include "tls/stream.hpp"
#include "util/log.hpp"
#include "util/result.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <openssl/types.h>

#include <chrono>
#include <string>
#include <string_view>
#include <system_error>

namespace fleece::tls {

struct Authorization {
  bool allowed = false;
  PeerIdentity peer;
  std::string reason;  // why not, when refused
};

// Judges a connection whose handshake completed.
Authorization authorize(const SSL* ssl);
// Why a handshake failed, as precisely as OpenSSL knows
// ("certificate verify failed: unable to get local issuer certificate").
std::string describe_handshake_failure(const SSL* ssl, const boost::system::error_code& ec);

template <class Next>
boost::asio::awaitable<Result<PeerIdentity>> accept(Stream<Next>& stream, std::string_view peer,
                                                     std::chrono::steady_clock::duration timeout) {
  using namespace boost::asio::experimental::awaitable_operators;
  const std::string who(peer);  // the caller's view may not outlive a suspension
  if (timeout <= timeout.zero()) timeout = std::chrono::hours(24);
  boost::asio::steady_timer timer(stream.get_executor(), timeout);
  auto token = boost::asio::as_tuple(boost::asio::use_awaitable);
  auto outcome = co_await (stream.async_handshake(token) ||
                           timer.async_wait(token));
  if (outcome.index() == 1) {
    FLEECE_LOG_WARN("tls", "{}: TLS handshake not finished after {} ms; closing", who,
                    std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count());
    co_return std::make_error_code(std::errc::timed_out);
  }
  if (auto [ec] = std::get<0>(outcome); ec) {
    FLEECE_LOG_WARN("tls", "{}: TLS handshake failed: {}", who, describe_handshake_failure(stream.native_handle(), ec));
    co_return std::make_error_code(std::errc::connection_aborted);
  }
  Authorization verdict = authorize(stream.native_handle());
  if (!verdict.allowed) {
    FLEECE_LOG_WARN("tls", "{}: refused {}: {}", who, verdict.peer.describe(), verdict.reason);
    co_return std::make_error_code(std::errc::permission_denied);
  }
  FLEECE_LOG_INFO("tls", "{}: TLS established with {} ({}, {})", who, verdict.peer.describe(), verdict.peer.protocol,
                  verdict.peer.cipher);
  co_return verdict.peer;
}

}  // namespace fleece::tls
