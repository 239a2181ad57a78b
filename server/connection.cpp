#include "server/connection.hpp"

#include "nbd/constants.hpp"
#include "nbd/handshake.hpp"
#include "nbd/negotiation.hpp"
#include "nbd/reply.hpp"
#include "nbd/request.hpp"
#include "nbd/wire.hpp"
#include "tls/server_context.hpp"
#include "tls/upgradable_stream.hpp"
#include "util/errors.hpp"
#include "util/log.hpp"
#include "util/transfer_unbounded.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <sys/sendfile.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <span>
#include <vector>

namespace fleece::server {
namespace {

namespace asio = boost::asio;
using asio::awaitable;
using boost::system::error_code;

constexpr size_t kReadBufferSize = 256 * 1024;  // one recv may carry many requests
constexpr size_t kDirectPayloadMin = 64 * 1024; // larger WRITE payloads skip the read buffer
constexpr uint32_t kHoleProbeMin = 64 * 1024;   // smaller READs always send data
// READs from this size on go from the page cache to the socket by sendfile
// when the device allows it (plaintext only): no copy into a buffer and none
// out of it. Smaller ones are cheaper to copy than to splice.
constexpr uint32_t kSendFileMin = 32 * 1024;
constexpr size_t kMaxIov = 512;                 // pieces per gathered write (IOV_MAX is 1024)
constexpr size_t kKeepBufferMax = 4u << 20;     // larger job buffers are not kept for reuse
constexpr uint64_t kTlsInflightBudget = 8u << 20;  // see inflight_budget()
constexpr auto kCloseNotifyTimeout = std::chrono::seconds(2);  // for a client that stopped reading

inline auto redirect(error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); }

// A 4096-aligned buffer that grows and is reused (O_DIRECT needs alignment).
struct AlignedBuffer {
  std::byte* data = nullptr;
  size_t capacity = 0;
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { std::free(data); }
  void reserve(size_t n) {
    if (n <= capacity) return;
    std::free(data);
    data = nullptr;
    capacity = 0;
    size_t rounded = (std::max<size_t>(n, 4096) + 4095) & ~size_t(4095);
    data = static_cast<std::byte*>(std::aligned_alloc(4096, rounded));
    if (!data) throw std::bad_alloc();
    capacity = rounded;
  }
  void trim_to(size_t max) {
    if (capacity > max) {
      std::free(data);
      data = nullptr;
      capacity = 0;
    }
  }
};

// One request from decode to reply sent. Pooled per connection.
struct Job {
  enum class Source : uint8_t { head, data, file };
  struct Piece {
    Source source;
    uint32_t offset;  // into head or buffer; unused for the file
    uint32_t length;
  };
  nbd::Request request;
  AlignedBuffer buffer;           // WRITE payload / READ data
  std::vector<uint8_t> head;      // reply headers and small chunks
  std::vector<Piece> pieces;      // the reply, in wire order
  std::vector<block::Extent> extents;
  block::FileRange file;          // READ data sent straight from the page cache
  uint64_t budget = 0;            // payload bytes reserved against the connection budget

  void reset() {
    head.clear();
    pieces.clear();
    extents.clear();
    file = {};
    budget = 0;
  }
  uint8_t* add_head(size_t n) {
    size_t at = head.size();
    head.resize(at + n);
    pieces.push_back({Source::head, uint32_t(at), uint32_t(n)});
    return head.data() + at;
  }
  void add_head(std::span<const uint8_t> bytes) {
    std::memcpy(add_head(bytes.size()), bytes.data(), bytes.size());
  }
  void add_data(uint32_t offset, uint32_t length) { pieces.push_back({Source::data, offset, length}); }
  void add_file(uint32_t length) { pieces.push_back({Source::file, 0, length}); }
};

uint32_t nbd_error(std::error_code ec) {
  if (ec.category() == fleece_category()) {
    switch (static_cast<Errc>(ec.value())) {
      case Errc::shutting_down: return nbd::kESHUTDOWN;
      case Errc::store_full: return nbd::kENOSPC;
      default: return nbd::kEIO;
    }
  }
  if (ec.category() == std::generic_category() || ec.category() == std::system_category()) {
    return nbd::errno_to_nbd(ec.value());
  }
  return nbd::kEIO;
}

ExportStats::Op stats_op(uint16_t type) {
  switch (type) {
    case nbd::kCmdRead: return ExportStats::Op::read;
    case nbd::kCmdWrite: return ExportStats::Op::write;
    case nbd::kCmdFlush: return ExportStats::Op::flush;
    case nbd::kCmdTrim: return ExportStats::Op::trim;
    case nbd::kCmdWriteZeroes: return ExportStats::Op::zero;
    case nbd::kCmdBlockStatus: return ExportStats::Op::block_status;
    case nbd::kCmdCache: return ExportStats::Op::cache;
    default: return ExportStats::Op::other;
  }
}

template <class Stream>
class Connection final : public ConnectionHandle,
                         public std::enable_shared_from_this<Connection<Stream>> {
 public:
  Connection(Stream stream, ConnectionSettings settings, std::function<void()> on_finished,
             std::string peer)
      : stream_(std::move(stream)),
        settings_(settings),
        on_finished_(std::move(on_finished)),
        peer_(std::move(peer)),
        handshake_timer_(stream_.get_executor()),
        writer_wake_(stream_.get_executor()),
        budget_wake_(stream_.get_executor()) {}

  void start() {
    asio::co_spawn(stream_.get_executor(), run(this->shared_from_this()), asio::detached);
  }

  void request_stop() override {
    asio::post(stream_.get_executor(), [self = this->shared_from_this()] {
      self->stop_requested_ = true;
      self->maybe_finish_stop();
    });
  }
  void abort() override {
    asio::post(stream_.get_executor(), [self = this->shared_from_this()] { self->close_now(); });
  }
  const std::string& peer() const override { return peer_; }

 private:
  // ---- lifecycle -------------------------------------------------------

  awaitable<void> run(std::shared_ptr<Connection> self) {
    (void)self;  // keeps the connection alive while the coroutine runs
    try {
      negotiating_ = true;
      handshake_timer_.expires_after(settings_.handshake_timeout);
      handshake_timer_.async_wait([weak = this->weak_from_this()](error_code ec) {
        auto s = weak.lock();
        if (ec || !s || !s->negotiating_) return;
        FLEECE_LOG_INFO("nbd", "{}: handshake timed out, dropping the client", s->peer_);
        s->close_now();
      });
      bool ok = co_await negotiate();
      negotiating_ = false;
      handshake_timer_.cancel();
      if (ok && !closed_) co_await transmit();
      if (!closed_ && stream_.is_tls()) co_await send_close_notify();
    } catch (const std::exception& e) {
      FLEECE_LOG_ERROR("nbd", "{}: connection failed: {}", peer_, e.what());
    }
    close_now();
    if (on_finished_) on_finished_();
  }

  // RFC 8446, 6.1: our close_notify before we close, so the client can tell
  // the end of the session from a cut connection. Bounded: a client that
  // stopped reading does not keep the connection open (the handshake timer
  // is idle once negotiation is over, so it bounds this too).
  awaitable<void> send_close_notify() {
    handshake_timer_.expires_after(kCloseNotifyTimeout);
    handshake_timer_.async_wait([weak = this->weak_from_this()](error_code ec) {
      if (auto s = weak.lock(); s && !ec) s->close_now();
    });
    error_code ec;
    co_await stream_.tls()->async_shutdown(redirect(ec));
    handshake_timer_.cancel();
  }

  void close_now() {
    if (closed_) return;
    closed_ = true;
    error_code ec;
    stream_.lowest_layer().shutdown(asio::socket_base::shutdown_both, ec);
    stream_.lowest_layer().close(ec);
    writer_wake_.cancel();
    budget_wake_.cancel();
  }

  // Graceful stop: once nothing is in flight, stop reading; the writer then
  // sends what is queued and the connection closes.
  void maybe_finish_stop() {
    if (!stop_requested_ || negotiating_ || closed_ || reader_done_ || in_flight_ != 0) return;
    error_code ec;
    stream_.lowest_layer().shutdown(asio::socket_base::shutdown_receive, ec);
    budget_wake_.cancel();
  }

  bool stopping() const {
    return stop_requested_ || (settings_.stopping && settings_.stopping->load(std::memory_order_relaxed));
  }

  // ---- negotiation -----------------------------------------------------

  awaitable<bool> drain_exact(uint64_t n) {
    std::vector<uint8_t> scratch(std::min<uint64_t>(n, 64 * 1024));
    while (n > 0) {
      error_code ec;
      size_t chunk = std::min<uint64_t>(n, scratch.size());
      co_await asio::async_read(stream_, asio::buffer(scratch.data(), chunk), redirect(ec));
      if (ec) co_return false;
      n -= chunk;
    }
    co_return true;
  }

  awaitable<bool> negotiate() {
    error_code ec;
    auto greeting = nbd::encode_greeting();
    co_await asio::async_write(stream_, asio::buffer(greeting), redirect(ec));
    if (ec) co_return false;
    std::array<uint8_t, nbd::kClientFlagsSize> flags{};
    co_await asio::async_read(stream_, asio::buffer(flags), redirect(ec));
    if (ec) {
      // A port probe (connect, then close) is normal: not an error.
      FLEECE_LOG_DEBUG("nbd", "{}: closed before the handshake", peer_);
      co_return false;
    }
    nbd::Negotiator negotiator(*settings_.registry,
                               nbd::NegotiatorConfig{.tls = settings_.tls ? settings_.tls_mode : nbd::TlsMode::off,
                                                      .shutting_down = stopping()});
    if (!negotiator.on_client_flags(nbd::wire::load32(flags.data()))) {
      FLEECE_LOG_INFO("nbd", "{}: refused client flags {:#x}", peer_, nbd::wire::load32(flags.data()));
      co_return false;
    }
    std::vector<uint8_t> payload;
    for (;;) {
      std::array<uint8_t, nbd::kOptionHeaderSize> raw{};
      co_await asio::async_read(stream_, asio::buffer(raw), redirect(ec));
      if (ec) co_return false;
      auto header = nbd::decode_option_header(raw);
      if (!header) {
        FLEECE_LOG_INFO("nbd", "{}: bad option magic, dropping", peer_);
        co_return false;
      }
      if (header->length > nbd::kDropOptionLength) {
        FLEECE_LOG_INFO("nbd", "{}: option {} of {} bytes, dropping", peer_, header->option, header->length);
        co_return false;
      }
      nbd::Negotiator::Step step;
      if (header->length > nbd::kMaxOptionLength) {
        if (!co_await drain_exact(header->length)) co_return false;
        step = negotiator.on_oversized_option(header->option);
      } else {
        payload.resize(header->length);
        if (header->length) {
          co_await asio::async_read(stream_, asio::buffer(payload), redirect(ec));
          if (ec) co_return false;
        }
        if (stopping() && header->option != nbd::kOptAbort) {
          if (header->option == nbd::kOptExportName) co_return false;  // cannot be answered
          step.reply = nbd::encode_option_reply(header->option, nbd::kRepErrShutdown);
        } else {
          step = negotiator.on_option(header->option, payload);
        }
      }
      if (!step.reply.empty()) {
        co_await asio::async_write(stream_, asio::buffer(step.reply), redirect(ec));
        if (ec) co_return false;
      }
      switch (step.action) {
        case nbd::Negotiator::Action::kContinue:
          continue;
        case nbd::Negotiator::Action::kTransmission:
          session_ = negotiator.session();
          co_return true;
        case nbd::Negotiator::Action::kStartTls: {
          // The ACK is out; a failed handshake ends the session (the spec's MUST).
          auto& tls = stream_.start_tls(settings_.tls->current());
          auto peer = co_await tls::accept(tls, peer_, settings_.handshake_timeout);
          if (!peer) co_return false;
          negotiator.on_tls_established();
          continue;
        }
        case nbd::Negotiator::Action::kClose:
          co_return false;
      }
    }
  }

  // ---- transmission ----------------------------------------------------

  awaitable<void> transmit() {
    export_ = settings_.registry->get(session_.export_info.name);
    if (!export_) {
      FLEECE_LOG_INFO("nbd", "{}: export '{}' went away during negotiation", peer_, session_.export_info.name);
      co_return;
    }
    device_ = export_->device().get();
    structured_ = session_.structured_replies;
    for (const auto& context : session_.contexts) {
      if (context.name == nbd::kContextBaseAllocation) {
        contexts_.push_back({context.id, nullptr});
      } else if (auto source = export_->meta_context(context.name)) {
        contexts_.push_back({context.id, std::move(source)});
      }
    }
    auto executor = stream_.get_executor();
    client_id_ = settings_.registry->attach_client(
        export_->name(), peer_, [weak = this->weak_from_this(), executor] {
          asio::post(executor, [weak] {
            if (auto s = weak.lock()) s->close_now();
          });
        },
        counters_);
    FLEECE_LOG_INFO("nbd", "{}: serving export '{}' ({} bytes{}{})", peer_, export_->name(),
                    session_.export_info.size, structured_ ? ", structured" : "",
                    export_->writable() ? "" : ", read-only");
    read_buffer_.resize(kReadBufferSize);
    using namespace asio::experimental::awaitable_operators;
    co_await (reader() && writer());
    settings_.registry->detach_client(client_id_);
    FLEECE_LOG_INFO("nbd", "{}: disconnected from '{}'", peer_, export_->name());
  }

  // Makes at least n bytes available at read_pos_; false on EOF or error.
  awaitable<bool> fill(size_t n) {
    size_t have = read_end_ - read_pos_;
    if (have >= n) co_return true;
    if (read_pos_ > 0) {
      std::memmove(read_buffer_.data(), read_buffer_.data() + read_pos_, have);
      read_pos_ = 0;
      read_end_ = have;
    }
    while (read_end_ < n) {
      error_code ec;
      size_t got = co_await stream_.async_read_some(
          asio::buffer(read_buffer_.data() + read_end_, read_buffer_.size() - read_end_), redirect(ec));
      if (ec) co_return false;
      read_end_ += got;
    }
    co_return true;
  }

  // Reads n payload bytes into out (from the read buffer first).
  awaitable<bool> read_payload(std::byte* out, size_t n) {
    size_t have = read_end_ - read_pos_;
    if (n <= read_buffer_.size() && n - std::min(have, n) < kDirectPayloadMin) {
      if (!co_await fill(n)) co_return false;
      std::memcpy(out, read_buffer_.data() + read_pos_, n);
      read_pos_ += n;
      co_return true;
    }
    std::memcpy(out, read_buffer_.data() + read_pos_, have);
    read_pos_ = read_end_ = 0;
    error_code ec;
    co_await asio::async_read(stream_, asio::buffer(out + have, n - have), TransferAllUnbounded{},
                              redirect(ec));
    co_return !ec;
  }

  awaitable<bool> drain(size_t n) {
    while (n > 0) {
      if (!co_await fill(1)) co_return false;
      size_t take = std::min(n, read_end_ - read_pos_);
      read_pos_ += take;
      n -= take;
    }
    co_return true;
  }

  static awaitable<void> wait_on(asio::steady_timer& timer) {
    timer.expires_at(asio::steady_timer::time_point::max());
    error_code ec;
    co_await timer.async_wait(redirect(ec));
  }

  awaitable<void> reader() {
    while (!closed_) {
      if (!co_await fill(nbd::kRequestSize)) break;
      std::span<const uint8_t, nbd::kRequestSize> raw(read_buffer_.data() + read_pos_, nbd::kRequestSize);
      auto request = nbd::decode_request(raw);
      read_pos_ += nbd::kRequestSize;
      if (!request) {
        FLEECE_LOG_INFO("nbd", "{}: bad request magic, dropping", peer_);
        close_now();
        break;
      }
      if (request->type == nbd::kCmdDisc) {
        FLEECE_LOG_DEBUG("nbd", "{}: disconnect requested", peer_);
        break;
      }
      nbd::Verdict verdict = nbd::validate(*request, session_);
      if (verdict.disconnect) {
        FLEECE_LOG_INFO("nbd", "{}: {}; dropping", peer_, verdict.message ? verdict.message : "invalid request");
        close_now();
        break;
      }
      uint32_t payload = nbd::payload_length(*request);
      if (verdict.error != 0 || stopping()) {
        if (payload && !co_await drain(payload)) break;
        Job* job = acquire();
        job->request = *request;
        if (verdict.error) {
          FLEECE_LOG_DEBUG("nbd", "{}: request type {} refused: {}", peer_, request->type,
                           verdict.message ? verdict.message : "");
          reply_error(*job, verdict.error, verdict.message ? verdict.message : "invalid request");
        } else {
          reply_error(*job, nbd::kESHUTDOWN, "the server is shutting down");
        }
        queue(job);
        continue;
      }
      uint64_t cost = request->type == nbd::kCmdRead ? request->length : payload;
      while (!closed_ && budget_used_ > 0 && budget_used_ + cost > inflight_budget()) {
        co_await wait_on(budget_wake_);
      }
      if (closed_) break;
      Job* job = acquire();
      job->request = *request;
      job->budget = cost;
      budget_used_ += cost;
      if (payload) {
        job->buffer.reserve(payload);
        if (!co_await read_payload(job->buffer.data, payload)) {
          release(job);
          break;
        }
      }
      ++in_flight_;
      asio::co_spawn(stream_.get_executor(), serve(job, this->shared_from_this()), asio::detached);
    }
    reader_done_ = true;
    writer_wake_.cancel();
  }

  awaitable<void> writer() {
    std::vector<asio::const_buffer> iov;
    std::vector<Job*> batch;
    iov.reserve(kMaxIov);
    for (;;) {
      if (ready_.empty()) {
        if (closed_ || (reader_done_ && in_flight_ == 0)) break;
        co_await wait_on(writer_wake_);
        continue;
      }
      iov.clear();
      batch.clear();
      size_t pieces = 0;
      while (!ready_.empty()) {
        Job* job = ready_.front();
        if (!batch.empty() && pieces + job->pieces.size() > kMaxIov) break;
        pieces += job->pieces.size();
        batch.push_back(job);
        ready_.pop_front();
      }
      error_code ec;
      // Buffers are gathered into one write; a file range is sent after
      // what precedes it, by sendfile.
      for (Job* job : batch) {
        for (const auto& piece : job->pieces) {
          if (piece.source != Job::Source::file) {
            const void* base = piece.source == Job::Source::data
                                   ? static_cast<const void*>(job->buffer.data + piece.offset)
                                   : static_cast<const void*>(job->head.data() + piece.offset);
            iov.emplace_back(base, piece.length);
            continue;
          }
          if (!iov.empty()) co_await asio::async_write(stream_, iov, TransferAllUnbounded{}, redirect(ec));
          iov.clear();
          if (!ec) co_await send_file(job->file, piece.length, ec);
          if (ec) break;
        }
        if (ec) break;
      }
      if (!ec && !iov.empty()) co_await asio::async_write(stream_, iov, TransferAllUnbounded{}, redirect(ec));
      for (Job* job : batch) release(job);
      budget_wake_.cancel();
      if (ec) {
        close_now();
        break;
      }
    }
  }

  // sendfile(2) of a whole range on the non-blocking socket, waiting for
  // room when the socket is full. A file that ends early (truncated behind
  // our back) is an error: the reply header already promised the length.
  awaitable<void> send_file(const block::FileRange& file, uint32_t length, error_code& ec) {
    auto& socket = stream_.socket();
    if (!socket.native_non_blocking()) socket.native_non_blocking(true, ec);
    off_t offset = off_t(file.offset);
    size_t left = length;
    while (!ec && left > 0) {
      ssize_t n = ::sendfile(socket.native_handle(), file.fd, &offset, left);
      if (n > 0) {
        left -= size_t(n);
      } else if (n == 0) {
        ec = std::make_error_code(std::errc::io_error);
      } else if (errno == EAGAIN) {
        co_await socket.async_wait(asio::socket_base::wait_write, redirect(ec));
      } else if (errno != EINTR) {
        ec = error_code(errno, boost::system::generic_category());
      }
    }
  }

  // ---- requests --------------------------------------------------------

  Job* acquire() {
    if (free_.empty()) {
      jobs_.push_back(std::make_unique<Job>());
      return jobs_.back().get();
    }
    Job* job = free_.back();
    free_.pop_back();
    return job;
  }

  // Under TLS every READ's data waits in a job buffer until it is sealed,
  // and the cipher, not the disk, sets the pace: a smaller budget keeps the
  // pipe as full (bench/README.md, "In-flight budget under TLS") at less
  // than half the memory. Plaintext READs mostly leave by sendfile.
  uint64_t inflight_budget() const {
    return stream_.is_tls() ? std::min(settings_.inflight_budget, kTlsInflightBudget)
                            : settings_.inflight_budget;
  }

  void release(Job* job) {
    budget_used_ -= job->budget;
    job->reset();
    job->buffer.trim_to(kKeepBufferMax);
    free_.push_back(job);
  }

  void queue(Job* job) {
    ready_.push_back(job);
    writer_wake_.cancel();
  }

  void reply_ok(Job& job) {
    if (structured_) {
      nbd::encode_none_done(std::span<uint8_t, nbd::kChunkHeaderSize>(job.add_head(nbd::kChunkHeaderSize),
                                                                      nbd::kChunkHeaderSize),
                            job.request.cookie);
    } else {
      nbd::encode_simple_reply(std::span<uint8_t, nbd::kSimpleReplySize>(job.add_head(nbd::kSimpleReplySize),
                                                                         nbd::kSimpleReplySize),
                               job.request.cookie, 0);
    }
  }

  void reply_error(Job& job, uint32_t error, std::string_view message) {
    job.pieces.clear();
    job.head.clear();
    if (structured_) {
      job.add_head(nbd::encode_error_chunk(nbd::kReplyFlagDone, job.request.cookie, error, message));
    } else {
      nbd::encode_simple_reply(std::span<uint8_t, nbd::kSimpleReplySize>(job.add_head(nbd::kSimpleReplySize),
                                                                         nbd::kSimpleReplySize),
                               job.request.cookie, error);
    }
  }

  // The whole range as one data reply: header, then the buffer (or the
  // job's file range).
  void reply_data(Job& job, bool from_file = false) {
    const auto& r = job.request;
    if (structured_) {
      nbd::encode_offset_data_prefix(
          std::span<uint8_t, nbd::kOffsetDataPrefixSize>(job.add_head(nbd::kOffsetDataPrefixSize),
                                                         nbd::kOffsetDataPrefixSize),
          nbd::kReplyFlagDone, r.cookie, r.offset, r.length);
    } else {
      nbd::encode_simple_reply(std::span<uint8_t, nbd::kSimpleReplySize>(job.add_head(nbd::kSimpleReplySize),
                                                                         nbd::kSimpleReplySize),
                               r.cookie, 0);
    }
    if (from_file) job.add_file(r.length);
    else job.add_data(0, r.length);
  }

  // READ data straight from the page cache, when the device lives in one
  // file and every page is resident (never through TLS: it needs the bytes).
  bool reply_from_file(Job& job) {
    const auto& r = job.request;
    if (r.length < kSendFileMin || stream_.is_tls()) return false;
    auto range = device_->file_range(r.offset, r.length);
    if (!range) return false;
    job.file = std::move(*range);
    reply_data(job, true);
    return true;
  }

  // READ with structured replies: holes (zero extents) go as OFFSET_HOLE and
  // are not read. Returns false when the probe found no hole (caller reads
  // the range plainly).
  awaitable<bool> read_sparse(Job& job, std::error_code& ec) {
    const auto& r = job.request;
    job.extents.clear();
    if (co_await device_->block_status(r.offset, r.length, job.extents)) co_return false;
    struct Segment {
      uint32_t start, length;
      bool hole;
    };
    std::vector<Segment> segments;
    uint64_t pos = 0;
    bool any_hole = false;
    for (const auto& extent : job.extents) {
      if (pos >= r.length || extent.length == 0) break;
      uint32_t length = uint32_t(std::min<uint64_t>(extent.length, r.length - pos));
      bool hole = (extent.flags & block::kExtentZero) != 0;
      any_hole |= hole;
      if (!segments.empty() && segments.back().hole == hole) segments.back().length += length;
      else segments.push_back({uint32_t(pos), length, hole});
      pos += length;
    }
    if (!any_hole) co_return false;
    job.buffer.reserve(r.length);
    if (pos < r.length) {
      if (!segments.back().hole) segments.back().length += uint32_t(r.length - pos);
      else segments.push_back({uint32_t(pos), uint32_t(r.length - pos), false});
    }
    for (const auto& s : segments) {
      if (s.hole) continue;
      ec = co_await device_->read(r.offset + s.start, std::span(job.buffer.data + s.start, s.length));
      if (ec) co_return true;
    }
    for (size_t i = 0; i < segments.size(); ++i) {
      const auto& s = segments[i];
      uint16_t flags = i + 1 == segments.size() ? nbd::kReplyFlagDone : 0;
      if (s.hole) {
        nbd::encode_offset_hole(std::span<uint8_t, nbd::kOffsetHoleSize>(job.add_head(nbd::kOffsetHoleSize),
                                                                         nbd::kOffsetHoleSize),
                                flags, r.cookie, r.offset + s.start, s.length);
      } else {
        nbd::encode_offset_data_prefix(
            std::span<uint8_t, nbd::kOffsetDataPrefixSize>(job.add_head(nbd::kOffsetDataPrefixSize),
                                                           nbd::kOffsetDataPrefixSize),
            flags, r.cookie, r.offset + s.start, s.length);
        job.add_data(s.start, s.length);
      }
    }
    co_return true;
  }

  awaitable<std::error_code> execute(Job& job) {
    const auto& r = job.request;
    const bool fua = (r.flags & nbd::kCmdFlagFua) != 0;
    std::error_code ec;
    switch (r.type) {
      case nbd::kCmdRead: {
        if (r.length == 0) {
          reply_ok(job);
          break;
        }
        if (structured_ && !(r.flags & nbd::kCmdFlagDf) && r.length >= kHoleProbeMin &&
            co_await read_sparse(job, ec)) {
          break;
        }
        if (reply_from_file(job)) break;
        job.buffer.reserve(r.length);
        ec = co_await device_->read(r.offset, std::span(job.buffer.data, r.length));
        if (!ec) reply_data(job);
        break;
      }
      case nbd::kCmdWrite:
        ec = co_await device_->write(r.offset, std::span<const std::byte>(job.buffer.data, r.length),
                                     block::WriteFlags{.fua = fua});
        if (!ec) reply_ok(job);
        break;
      case nbd::kCmdFlush:
        ec = co_await device_->flush();
        if (!ec) reply_ok(job);
        break;
      case nbd::kCmdTrim:
        ec = co_await device_->trim(r.offset, r.length, block::WriteFlags{.fua = fua});
        if (!ec) reply_ok(job);
        break;
      case nbd::kCmdWriteZeroes:
        ec = co_await device_->write_zeroes(
            r.offset, r.length,
            block::ZeroFlags{.fua = fua,
                             .may_trim = (r.flags & nbd::kCmdFlagNoHole) == 0,
                             .fast_only = (r.flags & nbd::kCmdFlagFastZero) != 0});
        if (!ec) reply_ok(job);
        break;
      case nbd::kCmdCache:
        ec = co_await device_->cache(r.offset, r.length);
        if (!ec) reply_ok(job);
        break;
      case nbd::kCmdBlockStatus:
        ec = co_await block_status(job);
        break;
      default:
        reply_error(job, nbd::kEINVAL, "unknown command");
        break;
    }
    co_return ec;
  }

  // One chunk per negotiated context, the last one flagged DONE. Every
  // context is asked before anything is encoded, so a failure of any of
  // them is one clean error reply.
  awaitable<std::error_code> block_status(Job& job) {
    const auto& r = job.request;
    if (contexts_.empty()) {
      reply_error(job, nbd::kEINVAL, "no metadata context negotiated");
      co_return std::error_code{};
    }
    const bool req_one = (r.flags & nbd::kCmdFlagReqOne) != 0;
    std::vector<std::vector<nbd::StatusExtent>> answers;
    answers.reserve(contexts_.size());
    std::vector<nbd::RawExtent> raw;
    for (const auto& [id, source] : contexts_) {
      raw.clear();
      std::error_code ec;
      if (source) ec = co_await source->extents(r.offset, r.length, raw);
      else ec = co_await base_allocation(r.offset, r.length, job.extents, raw);
      if (ec) co_return ec;
      if (raw.empty()) raw.push_back({r.length, 0});
      answers.push_back(nbd::shape_extents(raw, r.length, req_one));
    }
    for (size_t i = 0; i < contexts_.size(); ++i) {
      const uint16_t flags = i + 1 == contexts_.size() ? nbd::kReplyFlagDone : 0;
      job.add_head(nbd::encode_block_status_chunk(flags, r.cookie, contexts_[i].first, answers[i]));
    }
    co_return std::error_code{};
  }

  awaitable<std::error_code> base_allocation(uint64_t offset, uint64_t length,
                                             std::vector<block::Extent>& scratch,
                                             std::vector<nbd::RawExtent>& out) {
    scratch.clear();
    std::error_code ec = co_await device_->block_status(offset, length, scratch);
    if (ec) co_return ec;
    out.reserve(scratch.size());
    for (const auto& e : scratch) {
      uint32_t flags = 0;
      if (e.flags & block::kExtentHole) flags |= nbd::kStateHole;
      if (e.flags & block::kExtentZero) flags |= nbd::kStateZero;
      out.push_back({e.length, flags});
    }
    co_return ec;
  }

  awaitable<void> serve(Job* job, std::shared_ptr<Connection> self) {
    (void)self;
    auto started = std::chrono::steady_clock::now();
    ExportStats& stats = export_->stats();
    stats.begin();
    std::error_code ec;
    try {
      ec = co_await execute(*job);
    } catch (const std::exception& e) {
      FLEECE_LOG_ERROR("nbd", "{}: request failed: {}", peer_, e.what());
      ec = std::make_error_code(std::errc::io_error);
    }
    if (ec) {
      uint32_t error = nbd_error(ec);
      FLEECE_LOG_DEBUG("nbd", "{}: request type {} at {}+{} failed: {}", peer_, job->request.type,
                       job->request.offset, job->request.length, ec.message());
      reply_error(*job, error, ec.message());
    }
    auto micros = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started);
    uint64_t bytes = job->request.type == nbd::kCmdRead || job->request.type == nbd::kCmdWrite
                         ? job->request.length : 0;
    stats.end(stats_op(job->request.type), bytes, uint64_t(micros.count()), bool(ec));
    if (!ec && job->request.type == nbd::kCmdRead) {
      counters_->read_bytes.fetch_add(job->request.length, std::memory_order_relaxed);
    }
    --in_flight_;
    queue(job);
    maybe_finish_stop();
  }

  Stream stream_;
  ConnectionSettings settings_;
  std::function<void()> on_finished_;
  std::string peer_;
  asio::steady_timer handshake_timer_;
  asio::steady_timer writer_wake_;
  asio::steady_timer budget_wake_;

  bool negotiating_ = false;
  bool closed_ = false;
  bool stop_requested_ = false;
  bool reader_done_ = false;

  nbd::Session session_;
  std::shared_ptr<Export> export_;
  block::Device* device_ = nullptr;
  bool structured_ = false;
  // Negotiated contexts by id; nullptr stands for base:allocation.
  std::vector<std::pair<uint32_t, std::shared_ptr<MetaContext>>> contexts_;
  uint64_t client_id_ = 0;
  std::shared_ptr<ClientCounters> counters_ = std::make_shared<ClientCounters>();  // query-fleeces per client

  std::vector<uint8_t> read_buffer_;
  size_t read_pos_ = 0, read_end_ = 0;

  std::vector<std::unique_ptr<Job>> jobs_;
  std::vector<Job*> free_;
  std::deque<Job*> ready_;
  uint64_t in_flight_ = 0;
  uint64_t budget_used_ = 0;
};

}  // namespace

std::shared_ptr<ConnectionHandle> start_connection(Socket socket, ConnectionSettings settings,
                                                   std::function<void()> on_finished) {
  std::string peer = peer_name(socket.native_handle());
  auto connection = std::make_shared<Connection<tls::UpgradableStream<Socket>>>(
      tls::UpgradableStream<Socket>(std::move(socket)), settings, std::move(on_finished), std::move(peer));
  connection->start();
  return connection;
}

}  // namespace fleece::server
