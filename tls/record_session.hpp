// RecordSession: the server side of one TLS connection, OpenSSL doing the
// cryptography and the caller doing every I/O (see tls/stream.hpp).
//
//   RecordSession s(credentials);
//   socket bytes  -> s.input_space(), then s.commit_input(n) (or s.end_input())
//   s.handshake() / s.decrypt(out, n, got) -> Status
//   s.encrypt(data, n)                      -> records appended to the output
//   s.take_output(buffer)                   -> the bytes to send, in order
//
// Why not Asio's ssl::stream: it moves every record through a 17 KiB BIO
// pair, so a 1 MiB reply costs 64 async operations, 64 sends and two extra
// copies, and a read returns one record at most, which breaks up the reply
// batching plaintext connections get. Here OpenSSL writes its records
// straight into one output buffer the caller sends in one go, and decrypt()
// returns every record already received.
//
// Output made while decrypting (a KeyUpdate answer, an alert) waits in the
// output buffer and goes out ahead of the next records encrypted: TLS 1.3
// asks only that the KeyUpdate answer precede our next application data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

struct ssl_st;

namespace fleece::tls {

class Credentials;

class RecordSession {
 public:
  enum class Status {
    ok,          // progress made (handshake: finished)
    need_input,  // nothing more until more socket bytes are committed
    closed,      // the peer closed (close_notify, or end of input between records)
    failed,      // a TLS error: error() says which
  };

  explicit RecordSession(const Credentials& credentials);  // server side
  ~RecordSession();
  RecordSession(const RecordSession&) = delete;
  RecordSession& operator=(const RecordSession&) = delete;

  // Runs the handshake as far as the input allows.
  Status handshake();
  // Decrypts up to n bytes into out, across as many received records as fit.
  // ok means got > 0.
  Status decrypt(void* out, size_t n, size_t& got);
  // Encrypts n bytes into records of at most 16 KiB. False on a TLS error.
  bool encrypt(const void* data, size_t n);
  // Queues our close_notify (sent with the output; the peer's is not awaited).
  void close_notify();

  // Where the next socket read goes (at least one full record fits).
  std::span<uint8_t> input_space();
  void commit_input(size_t n);
  void end_input();  // the socket reached end of file

  bool has_output() const { return !output_.empty(); }
  // Moves the pending output into `into` (whose old content is discarded).
  void take_output(std::vector<uint8_t>& into);

  // The OpenSSL error that made a call fail (0: end of input mid-record).
  unsigned long error() const { return error_; }
  ssl_st* native_handle() { return ssl_; }

 private:
  friend struct SessionBio;
  size_t read_input(char* out, size_t n);
  Status fail();

  ssl_st* ssl_ = nullptr;
  std::vector<uint8_t> input_;
  size_t input_begin_ = 0;
  size_t input_end_ = 0;
  bool input_ended_ = false;
  std::vector<uint8_t> output_;
  unsigned long error_ = 0;
  bool closed_ = false;
  bool failed_ = false;
};

}  // namespace fleece::tls
