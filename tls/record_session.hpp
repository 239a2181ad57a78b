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
//
// With TLS 1.3 the records we send are sealed by a RecordSealer, not by
// SSL_write (see tls/record_sealer.hpp for why). OpenSSL tells us the
// server's traffic secret through its key log callback; from the end of the
// handshake on, whatever OpenSSL itself still sends (alerts, KeyUpdate
// answers, close_notify) reaches us through its message callback in clear
// and is sealed here in turn, and the records OpenSSL made of it are
// dropped. OpenSSL sends nothing under the application key before that (the
// server issues no session tickets), so the sealer starts at record 0.
#pragma once

#include "util/byte_buffer.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

struct ssl_st;
struct ssl_ctx_st;

namespace fleece::tls {

class Credentials;
class RecordSealer;

class RecordSession {
 public:
  enum class Status {
    ok,          // progress made (handshake: finished)
    need_input,  // nothing more until more socket bytes are committed
    closed,      // the peer closed (close_notify, or end of input between records)
    failed,      // a TLS error: error() says which
  };

  using Piece = std::span<const uint8_t>;

  // Readies a server context for sessions (the key log callback); called
  // once per context, before any session is made from it.
  static void prepare_context(ssl_ctx_st* ctx);

  explicit RecordSession(const Credentials& credentials);  // server side
  ~RecordSession();
  RecordSession(const RecordSession&) = delete;
  RecordSession& operator=(const RecordSession&) = delete;

  // Runs the handshake as far as the input allows.
  Status handshake();
  // Decrypts up to n bytes into out, across as many received records as fit.
  // ok means got > 0.
  Status decrypt(void* out, size_t n, size_t& got);
  // Encrypts the pieces' bytes, in order, into records of at most 16 KiB;
  // pieces under a record share records. False on a TLS error.
  bool encrypt(std::span<const Piece> pieces);
  // Whether our records are sealed here (TLS 1.3) rather than by OpenSSL.
  bool seals_records() const { return sealer_ != nullptr; }
  // Tests only: seal with a KeyUpdate every n records (before the handshake).
  void set_records_per_key(uint64_t n) { records_per_key_ = n; }
  // Queues our close_notify (sent with the output; the peer's is not awaited).
  void close_notify();

  // Where the next socket read goes (at least one full record fits).
  std::span<uint8_t> input_space();
  void commit_input(size_t n);
  void end_input();  // the socket reached end of file

  bool has_output() const { return !output_.empty(); }
  // Moves the pending output into `into` (whose old content is discarded).
  void take_output(ByteBuffer& into);

  // The OpenSSL error that made a call fail (0: end of input mid-record).
  unsigned long error() const { return error_; }
  ssl_st* native_handle() { return ssl_; }

 private:
  friend struct SessionBio;
  friend struct SessionCallbacks;
  size_t read_input(char* out, size_t n);
  Status fail();
  void start_sealing();
  void seal_openssl_message(int content_type, const uint8_t* bytes, size_t n);
  bool encrypt_with_openssl(std::span<const Piece> pieces);

  ssl_st* ssl_ = nullptr;
  std::vector<uint8_t> input_;
  size_t input_begin_ = 0;
  size_t input_end_ = 0;
  bool input_ended_ = false;
  ByteBuffer output_;
  std::unique_ptr<RecordSealer> sealer_;
  std::vector<uint8_t> server_secret_;  // from the key log, until the sealer takes it
  bool handshake_done_ = false;
  bool sent_under_application_key_ = false;  // by OpenSSL: then it keeps sealing
  uint64_t records_per_key_;
  std::vector<uint8_t> staging_;  // small pieces gathered into one record (OpenSSL path)
  unsigned long error_ = 0;
  bool closed_ = false;
  bool failed_ = false;
};

}  // namespace fleece::tls
