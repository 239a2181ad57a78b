// Stream<Next>: the server side of TLS over an Asio byte stream (a socket,
// or a reference to one), with the operations Asio's composed reads and
// writes need. A RecordSession does the cryptography; this file moves bytes.
//
//   tls::Stream<tcp::socket&> tls(socket, credentials);
//   co_await tls.async_handshake(use_awaitable);        // see tls::accept
//   co_await asio::async_read(tls, buffers, ...);       // every record received is decrypted at once
//   co_await asio::async_write(tls, gathered, ...);     // small pieces share records; one send per write
//
// One read and one write may run at once (Asio's rule for sockets); the
// handshake runs alone. Closing the socket cancels whatever runs. An
// operation that can finish without I/O completes through a post, never
// inside its initiating call.
//
// Include only from connection code and tests: this header brings in Asio's
// ssl error codes (OpenSSL itself stays in record_session.cpp).
#pragma once

#include "tls/record_session.hpp"
#include "util/transfer_unbounded.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

namespace fleece::tls {

template <class Next>
class Stream {
 public:
  using next_layer_type = std::remove_reference_t<Next>;
  using executor_type = typename next_layer_type::executor_type;
  using lowest_layer_type = typename next_layer_type::lowest_layer_type;

  // Plaintext encrypted per write_some: bounds the output buffers (two per
  // connection) while keeping sends large.
  static constexpr size_t kMaxWrite = 256 * 1024;

  template <class Arg>
  Stream(Arg&& next, const Credentials& credentials) : next_(std::forward<Arg>(next)), session_(credentials) {}
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  executor_type get_executor() { return next_.get_executor(); }
  next_layer_type& next_layer() { return next_; }
  lowest_layer_type& lowest_layer() { return next_.lowest_layer(); }
  ssl_st* native_handle() { return session_.native_handle(); }

  template <class Token>
  auto async_handshake(Token&& token) {
    return boost::asio::async_compose<Token, void(boost::system::error_code)>(HandshakeOp{this}, token, next_);
  }

  // Sends our close_notify; does not wait for the peer's.
  template <class Token>
  auto async_shutdown(Token&& token) {
    return boost::asio::async_compose<Token, void(boost::system::error_code)>(ShutdownOp{this}, token, next_);
  }

  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    return boost::asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
        ReadOp<MutableBuffers>{this, buffers}, token, next_);
  }

  template <class ConstBuffers, class Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    return boost::asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
        WriteOp<ConstBuffers>{this, buffers}, token, next_);
  }

 private:
  using error_code = boost::system::error_code;
  using Status = RecordSession::Status;

  boost::asio::mutable_buffer input_buffer() {
    auto space = session_.input_space();
    return {space.data(), space.size()};
  }

  // Hands a finished socket read to the session; the error to report, if any.
  error_code received(error_code ec, size_t n) {
    if (ec == boost::asio::error::eof) {
      session_.end_input();  // the session says whether that ends cleanly
      return {};
    }
    if (!ec) session_.commit_input(n);
    return ec;
  }

  error_code error_of(Status status) const {
    if (status == Status::closed) return boost::asio::error::eof;
    if (session_.error() == 0) return boost::asio::ssl::error::stream_truncated;
    return error_code(static_cast<int>(session_.error()), boost::asio::error::get_ssl_category());
  }

  // Decrypts into as many of the buffers as the received records fill.
  template <class MutableBuffers>
  std::pair<Status, size_t> decrypt(const MutableBuffers& buffers) {
    size_t total = 0;
    Status status = Status::need_input;
    for (auto it = boost::asio::buffer_sequence_begin(buffers); it != boost::asio::buffer_sequence_end(buffers); ++it) {
      boost::asio::mutable_buffer b(*it);
      if (b.size() == 0) continue;
      size_t got = 0;
      status = session_.decrypt(b.data(), b.size(), got);
      total += got;
      if (got < b.size()) break;
    }
    return {total > 0 ? Status::ok : status, total};
  }

  // Encrypts up to kMaxWrite bytes of the pieces. Returns the bytes
  // consumed, or nothing on a TLS error.
  template <class ConstBuffers>
  std::optional<size_t> encrypt(const ConstBuffers& buffers) {
    size_t consumed = 0;
    pieces_.clear();
    for (auto it = boost::asio::buffer_sequence_begin(buffers);
         it != boost::asio::buffer_sequence_end(buffers) && consumed < kMaxWrite; ++it) {
      boost::asio::const_buffer piece(*it);
      size_t take = std::min(piece.size(), kMaxWrite - consumed);
      pieces_.emplace_back(static_cast<const uint8_t*>(piece.data()), take);
      consumed += take;
    }
    if (!session_.encrypt(pieces_)) return std::nullopt;
    return consumed;
  }

  template <class MutableBuffers>
  struct ReadOp {
    Stream* s;
    MutableBuffers buffers;
    enum class State { start, reading, finishing } state = State::start;
    error_code result{};
    size_t got = 0;

    template <class Self>
    void operator()(Self& self, error_code ec = {}, size_t n = 0) {
      if (state == State::finishing) return self.complete(result, got);
      if (state == State::reading) {
        if (auto failed = s->received(ec, n)) return self.complete(failed, 0);
      }
      auto [status, total] = s->decrypt(buffers);
      if (status == Status::need_input && boost::asio::buffer_size(buffers) > 0) {
        state = State::reading;
        s->next_.async_read_some(s->input_buffer(), std::move(self));
        return;
      }
      got = total;
      if (status == Status::closed || status == Status::failed) result = s->error_of(status);
      if (state == State::reading) return self.complete(result, got);
      state = State::finishing;
      boost::asio::post(std::move(self));
    }
  };

  template <class ConstBuffers>
  struct WriteOp {
    Stream* s;
    ConstBuffers buffers;
    enum class State { start, sending, finishing } state = State::start;
    error_code result{};
    size_t consumed = 0;

    template <class Self>
    void operator()(Self& self, error_code ec = {}, size_t = 0) {
      if (state == State::finishing) return self.complete(result, consumed);
      if (state == State::sending) return self.complete(ec, ec ? 0 : consumed);
      auto done = s->encrypt(buffers);
      if (done) consumed = *done;
      else result = s->error_of(Status::failed);
      s->session_.take_output(s->sending_);
      if (!done || s->sending_.empty()) {
        state = State::finishing;
        return boost::asio::post(std::move(self));
      }
      state = State::sending;
      boost::asio::async_write(s->next_, boost::asio::buffer(s->sending_), TransferAllUnbounded{},
                               std::move(self));
    }
  };

  struct ShutdownOp {
    Stream* s;
    bool sent = false;

    template <class Self>
    void operator()(Self& self, error_code ec = {}, size_t = 0) {
      if (sent) return self.complete(ec);
      sent = true;
      s->session_.close_notify();
      s->session_.take_output(s->sending_);
      boost::asio::async_write(s->next_, boost::asio::buffer(s->sending_), TransferAllUnbounded{},
                               std::move(self));
    }
  };

  struct HandshakeOp {
    Stream* s;
    enum class State { start, reading, sending, finishing } state = State::start;
    Status status = Status::need_input;
    error_code result{};

    template <class Self>
    void operator()(Self& self, error_code ec = {}, size_t n = 0) {
      if (state == State::finishing) return self.complete(result);
      if (state == State::sending) {
        if (ec) return self.complete(ec);
        return next(self);
      }
      if (state == State::reading) {
        if (auto failed = s->received(ec, n)) return self.complete(failed);
      }
      status = s->session_.handshake();
      if (s->session_.has_output()) {  // our flight, or an alert
        s->session_.take_output(s->sending_);
        state = State::sending;
        boost::asio::async_write(s->next_, boost::asio::buffer(s->sending_), TransferAllUnbounded{},
                               std::move(self));
        return;
      }
      next(self);
    }

    template <class Self>
    void next(Self& self) {
      if (status == Status::need_input) {
        state = State::reading;
        s->next_.async_read_some(s->input_buffer(), std::move(self));
        return;
      }
      if (status != Status::ok) result = s->error_of(status);
      if (state != State::start) return self.complete(result);
      state = State::finishing;
      boost::asio::post(std::move(self));
    }
  };

  Next next_;
  RecordSession session_;
  ByteBuffer sending_;  // written by one write (or the handshake) at a time
  std::vector<RecordSession::Piece> pieces_;  // of the write running
};

}  // namespace fleece::tls
