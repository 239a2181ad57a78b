#include "tls/record_session.hpp"

#include "tls/credentials.hpp"
#include "tls/record_sealer.hpp"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string_view>

namespace fleece::tls {
namespace {

// Large enough that one socket read takes several records (a 2 MiB WRITE
// arrives in 16 reads); a record is at most 16 KiB + 256 bytes.
constexpr size_t kInputSize = 128 * 1024;
constexpr size_t kMinInputSpace = 17 * 1024;
constexpr size_t kRecordSize = RecordSealer::kMaxRecordData;

constexpr uint8_t kNewSessionTicket = 4;
constexpr uint8_t kKeyUpdate = 24;

int session_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

RecordSession* session_of(const SSL* ssl) { return static_cast<RecordSession*>(SSL_get_ex_data(ssl, session_index())); }

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The secret of an NSS key log line "LABEL <client random> <secret>", in hex.
std::vector<uint8_t> secret_of(std::string_view line) {
  std::vector<uint8_t> secret;
  auto space = line.rfind(' ');
  if (space == std::string_view::npos || (line.size() - space - 1) % 2 != 0) return secret;
  for (size_t i = space + 1; i + 1 < line.size(); i += 2) {
    int hi = hex_digit(line[i]), lo = hex_digit(line[i + 1]);
    if (hi < 0 || lo < 0) return {};
    secret.push_back(static_cast<uint8_t>(hi << 4 | lo));
  }
  return secret;
}

}  // namespace

// OpenSSL's callbacks into a session: the key log (our traffic secret) and
// the message callback (what OpenSSL sends, in clear).
struct SessionCallbacks {
  static void keylog(const SSL* ssl, const char* line) {
    static constexpr std::string_view kLabel = "SERVER_TRAFFIC_SECRET_0 ";
    RecordSession* session = session_of(ssl);
    std::string_view text(line);
    if (!session || text.substr(0, kLabel.size()) != kLabel) return;
    OPENSSL_cleanse(session->server_secret_.data(), session->server_secret_.size());
    session->server_secret_ = secret_of(text);
  }

  static void message(int write_p, int, int content_type, const void* buf, size_t len, SSL*, void* arg) {
    auto* session = static_cast<RecordSession*>(arg);
    if (!write_p || !session) return;
    const auto* bytes = static_cast<const uint8_t*>(buf);
    if (session->sealer_) {
      session->seal_openssl_message(content_type, bytes, len);
    } else if (content_type == SSL3_RT_HANDSHAKE && len > 0 && bytes[0] == kNewSessionTicket) {
      session->sent_under_application_key_ = true;  // its record count is OpenSSL's alone now
    }
  }
};

void RecordSession::prepare_context(SSL_CTX* ctx) { SSL_CTX_set_keylog_callback(ctx, SessionCallbacks::keylog); }

// The BIO OpenSSL reads from and writes to: the session's own buffers, so
// records go to and from the socket with no staging copy in between.
struct SessionBio {
  static RecordSession& of(BIO* bio) { return *static_cast<RecordSession*>(BIO_get_data(bio)); }

  static int write(BIO* bio, const char* data, size_t n, size_t* written) {
    *written = n;
    // Once we seal, OpenSSL's records are made with keys the peer has moved
    // past; what they carry has already been sealed again (message callback).
    if (of(bio).sealer_) return 1;
    auto& out = of(bio).output_;
    const auto* bytes = reinterpret_cast<const uint8_t*>(data);
    out.insert(out.end(), bytes, bytes + n);
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

RecordSession::RecordSession(const Credentials& credentials)
    : input_(kInputSize), records_per_key_(RecordSealer::kRecordsPerKey) {
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
  SSL_set_ex_data(ssl_, session_index(), this);
  SSL_set_msg_callback(ssl_, SessionCallbacks::message);
  SSL_set_msg_callback_arg(ssl_, this);
  // NBD frames its own messages: a peer that closes without close_notify
  // truncates nothing a request could depend on, so it is a plain close.
  SSL_set_options(ssl_, SSL_OP_IGNORE_UNEXPECTED_EOF);
}

RecordSession::~RecordSession() {
  SSL_free(ssl_);
  OPENSSL_cleanse(server_secret_.data(), server_secret_.size());
}

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
  if (r == 1) {
    if (!handshake_done_) start_sealing();
    handshake_done_ = true;
    return Status::ok;
  }
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
  // OpenSSL keeps the answer to a peer's KeyUpdate for its next SSL_write.
  // We make none once we seal, so have it sent now (the message callback
  // seals it): SSL_key_update puts the session back in the handshake state
  // that SSL_do_handshake needs to send anything.
  if (sealer_ && !failed_ && SSL_get_key_update_type(ssl_) != SSL_KEY_UPDATE_NONE) {
    ERR_clear_error();
    if (SSL_key_update(ssl_, SSL_KEY_UPDATE_NOT_REQUESTED) != 1 || SSL_do_handshake(ssl_) != 1) fail();
  }
  if (got > 0) return Status::ok;
  if (failed_) return Status::failed;
  return closed_ ? Status::closed : Status::need_input;
}

void RecordSession::start_sealing() {
  std::vector<uint8_t> secret = std::move(server_secret_);
  server_secret_.clear();
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl_);
  if (SSL_version(ssl_) == TLS1_3_VERSION && cipher && !sent_under_application_key_ && !secret.empty()) {
    sealer_ = RecordSealer::make(SSL_CIPHER_get_protocol_id(cipher), secret, records_per_key_);
  }
  OPENSSL_cleanse(secret.data(), secret.size());
}

// What OpenSSL sends once we seal: alerts and post-handshake messages.
void RecordSession::seal_openssl_message(int content_type, const uint8_t* bytes, size_t n) {
  if ((content_type != SSL3_RT_ALERT && content_type != SSL3_RT_HANDSHAKE) || n == 0) return;
  bool sealed = sealer_->seal(static_cast<uint8_t>(content_type), RecordSealer::Piece(bytes, n), output_);
  if (sealed && content_type == SSL3_RT_HANDSHAKE && bytes[0] == kKeyUpdate) sealed = sealer_->update_keys();
  if (!sealed) failed_ = true;  // no error_ from OpenSSL: the connection ends as truncated
}

bool RecordSession::encrypt(std::span<const Piece> pieces) {
  if (failed_) return false;
  if (!sealer_) return encrypt_with_openssl(pieces);
  if (sealer_->seal(RecordSealer::kApplicationData, pieces, output_)) return true;
  failed_ = true;
  return false;
}

// Pieces under a record share records (a reply header rides with its data
// and the next replies); whole records of a large piece go to OpenSSL as is.
bool RecordSession::encrypt_with_openssl(std::span<const Piece> pieces) {
  auto write = [&](const uint8_t* data, size_t n) {
    size_t written = 0;
    ERR_clear_error();
    if (SSL_write_ex(ssl_, data, n, &written) == 1 && written == n) return true;
    fail();
    return false;
  };
  staging_.clear();
  for (Piece piece : pieces) {
    const uint8_t* p = piece.data();
    size_t left = piece.size();
    while (left > 0) {
      if (staging_.empty() && left >= kRecordSize) {
        size_t whole = left - left % kRecordSize;
        if (!write(p, whole)) return false;
        p += whole;
        left -= whole;
        continue;
      }
      size_t take = std::min(left, kRecordSize - staging_.size());
      staging_.insert(staging_.end(), p, p + take);
      p += take;
      left -= take;
      if (staging_.size() == kRecordSize) {
        if (!write(staging_.data(), staging_.size())) return false;
        staging_.clear();
      }
    }
  }
  return staging_.empty() || write(staging_.data(), staging_.size());
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

void RecordSession::take_output(ByteBuffer& into) {
  into.clear();
  into.swap(output_);
}

}  // namespace fleece::tls
