// UpgradableStream<Socket>: a byte stream that starts as a plain socket and
// can become TLS in place (NBD's STARTTLS), so that one connection object,
// with one stream type, serves both phases.
//
//   UpgradableStream<Socket> stream(std::move(socket));
//   ... plain negotiation over `stream` ...
//   auto& tls = stream.start_tls(credentials);   // after the STARTTLS ACK was sent
//   auto peer = co_await tls::accept(tls, name, timeout);
//   ... everything after goes through TLS, same `stream` object ...
//
// Reads and writes are dispatched at initiation (one branch per operation),
// so composed operations (async_read, async_write with gathered buffers)
// work unchanged. lowest_layer() is always the socket: closing it cancels
// whatever runs, the TLS handshake included.
//
// The stream must not be moved once TLS started (the TLS layer refers to the
// socket member); it keeps the credentials generation it was upgraded with
// alive as long as it lives. Include only from connection code: this header
// brings in Asio's ssl error codes.
#pragma once

#include "tls/asio_stream.hpp"

#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>

#include <cassert>
#include <iterator>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace fleece::tls {

template <class Socket>
class UpgradableStream {
 public:
  using executor_type = typename Socket::executor_type;
  using lowest_layer_type = typename Socket::lowest_layer_type;
  using TlsLayer = Stream<Socket&>;

  explicit UpgradableStream(Socket socket) : socket_(std::move(socket)) {}
  UpgradableStream(UpgradableStream&& other) noexcept : socket_(std::move(other.socket_)) {
    assert(!other.tls_ && "a stream cannot move once TLS started");
  }
  UpgradableStream& operator=(UpgradableStream&&) = delete;

  // Wraps the socket in TLS with this credentials generation; the handshake
  // is still to be run (tls::accept). Call once.
  TlsLayer& start_tls(std::shared_ptr<const Credentials> credentials) {
    assert(!tls_);
    credentials_ = std::move(credentials);
    tls_.emplace(socket_, *credentials_);
    return *tls_;
  }
  bool is_tls() const { return tls_.has_value(); }
  TlsLayer* tls() { return tls_ ? &*tls_ : nullptr; }

  executor_type get_executor() { return socket_.get_executor(); }
  lowest_layer_type& lowest_layer() { return socket_.lowest_layer(); }
  Socket& socket() { return socket_; }

  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
        [this](auto handler, const MutableBuffers& b) {
          if (tls_) tls_->async_read_some(b, std::move(handler));
          else socket_.async_read_some(b, std::move(handler));
        },
        token, buffers);
  }

  template <class ConstBuffers, class Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
        [this](auto handler, const ConstBuffers& b) {
          if (tls_) tls_->async_write_some(b, std::move(handler));
          else socket_.async_write_some(b, std::move(handler));
        },
        token, buffers);
  }

 private:
  Socket socket_;
  std::shared_ptr<const Credentials> credentials_;  // outlives tls_ (declared before it)
  std::optional<TlsLayer> tls_;
};

}  // namespace fleece::tls
