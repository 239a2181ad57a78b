#include "tls/record_session.hpp"

#include "tls/credentials.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace fleece::tls {
namespace {

// Large enough that one socket read takes several records (a 2 MiB WRITE
// arrives in 16 reads); a record is at most 16 KiB + 256 bytes.
constexpr size_t kInputSize = 128 * 1024;
constexpr size_t kMinInputSpace = 17 * 1024;

}  // namespace

// The BIO OpenSSL reads from and writes to: the session's own buffers, so
// records go to and from the socket with no staging copy in between.
struct SessionBio {
  static RecordSession& of(BIO* bio) { return *static_cast<RecordSession*>(BIO_get_data(bio)); }

  static int write(BIO* bio, const char* data, size_t n, size_t* written) {
    auto& out = of(bio).output_;
    const auto* bytes = reinterpret_cast<const uint8_t*>(data);
    out.insert(out.end(), bytes, bytes + n);
    *written = n;
    return 1;
  }

  static int read(BIO* bio, char* out, size_t n, size_t* got) {
    BIO_clear_retry_flags(bio);
    RecordSession& session = of(bio);
    *got = session.read_input(out, n);
    if (*got > 0) return 1;
    if (!session.input_ended_) BIO_set_retry_read(bio);
    return 0;
  }

  static long ctrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

  static const BIO_METHOD* method() {
    static const BIO_METHOD* const made = [] {
      BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "fleece record session");
      if (!m || !BIO_meth_set_write_ex(m, write) || !BIO_meth_set_read_ex(m, read) || !BIO_meth_set_ctrl(m, ctrl)) {
        throw std::runtime_error("OpenSSL: cannot make the record session BIO method");
      }
      return m;
    }();
    return made;
  }
};

RecordSession::RecordSession(const Credentials& credentials) : input_(kInputSize) {
  ssl_ = SSL_new(credentials.asio().native_handle());
  BIO* bio = ssl_ ? BIO_new(SessionBio::method()) : nullptr;
  if (!bio) {
    SSL_free(ssl_);
    throw std::runtime_error("OpenSSL: cannot make a TLS session");
  }
  BIO_set_data(bio, this);
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl_, bio, bio);  // the one reference goes to ssl_
  SSL_set_accept_state(ssl_);
  // NBD frames its own messages: a peer that closes without close_notify
  // truncates nothing a request could depend on, so it is a plain close.
  SSL_set_options(ssl_, SSL_OP_IGNORE_UNEXPECTED_EOF);
}

RecordSession::~RecordSession() { SSL_free(ssl_); }

RecordSession::Status RecordSession::fail() {
  error_ = ERR_get_error();
  ERR_clear_error();
  failed_ = true;
  return Status::failed;
}

RecordSession::Status RecordSession::handshake() {
  if (failed_) return Status::failed;
  ERR_clear_error();
  int r = SSL_do_handshake(ssl_);
  if (r == 1) return Status::ok;
  if (SSL_get_error(ssl_, r) == SSL_ERROR_WANT_READ) return Status::need_input;
  return fail();
}

RecordSession::Status RecordSession::decrypt(void* out, size_t n, size_t& got) {
  got = 0;
  auto* bytes = static_cast<char*>(out);
  while (got < n && !closed_ && !failed_) {
    size_t r = 0;
    ERR_clear_error();
    if (SSL_read_ex(ssl_, bytes + got, n - got, &r) == 1) {
      got += r;
      continue;
    }
    int e = SSL_get_error(ssl_, 0);
    if (e == SSL_ERROR_WANT_READ) break;
    if (e == SSL_ERROR_ZERO_RETURN) closed_ = true;
    else fail();  // kept for the next call when bytes came first
  }
  if (got > 0) return Status::ok;
  if (failed_) return Status::failed;
  return closed_ ? Status::closed : Status::need_input;
}

bool RecordSession::encrypt(const void* data, size_t n) {
  if (failed_) return false;
  if (n == 0) return true;
  size_t written = 0;
  ERR_clear_error();
  if (SSL_write_ex(ssl_, data, n, &written) == 1 && written == n) return true;
  fail();
  return false;
}

void RecordSession::close_notify() {
  ERR_clear_error();
  if (!failed_) SSL_shutdown(ssl_);
  ERR_clear_error();
}

std::span<uint8_t> RecordSession::input_space() {
  if (input_begin_ == input_end_) {
    input_begin_ = input_end_ = 0;
  } else if (input_.size() - input_end_ < kMinInputSpace) {
    std::memmove(input_.data(), input_.data() + input_begin_, input_end_ - input_begin_);
    input_end_ -= input_begin_;
    input_begin_ = 0;
  }
  return {input_.data() + input_end_, input_.size() - input_end_};
}

void RecordSession::commit_input(size_t n) { input_end_ = std::min(input_end_ + n, input_.size()); }

void RecordSession::end_input() { input_ended_ = true; }

size_t RecordSession::read_input(char* out, size_t n) {
  size_t take = std::min(n, input_end_ - input_begin_);
  std::memcpy(out, input_.data() + input_begin_, take);
  input_begin_ += take;
  return take;
}

void RecordSession::take_output(std::vector<uint8_t>& into) {
  into.clear();
  into.swap(output_);
}

}  // namespace fleece::tls
