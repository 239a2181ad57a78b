#include "snapshot/block_job.hpp"

#include "util/log.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace fleece::snapshot {

namespace asio = boost::asio;

std::string_view to_string(BlockJobStatus s) {
  switch (s) {
    case BlockJobStatus::created: return "created";
    case BlockJobStatus::running: return "running";
    case BlockJobStatus::paused: return "paused";
    case BlockJobStatus::ready: return "ready";
    case BlockJobStatus::concluded: return "concluded";
  }
  return "unknown";
}

BlockJob::BlockJob(asio::any_io_executor executor, std::string id, std::string type,
                   std::string device, uint64_t speed, BlockJobEvents events)
    : strand_(asio::make_strand(executor)),
      timer_(strand_),
      id_(id),
      events_(std::move(events)),
      speed_(speed) {
  info_.id = std::move(id);
  info_.type = std::move(type);
  info_.device = std::move(device);
  info_.speed = speed;
}

BlockJob::~BlockJob() = default;

void BlockJob::start() {
  asio::co_spawn(strand_, [self = shared_from_this()]() { return self->body(); }, asio::detached);
}

block::Task<void> BlockJob::body() {
  {
    std::lock_guard g(mu_);
    info_.status = BlockJobStatus::running;
    info_.busy = true;
  }
  std::error_code ec;
  try {
    ec = co_await run();
  } catch (const std::exception& e) {
    report_error("run", e.what());
    ec = std::make_error_code(std::errc::io_error);
  }
  BlockJobInfo snapshot;
  {
    std::lock_guard g(mu_);
    info_.status = BlockJobStatus::concluded;
    info_.busy = false;
    info_.cancelled = ec == std::errc::operation_canceled;
    if (ec && !info_.cancelled && info_.error.empty()) info_.error = ec.message();
    snapshot = info_;
  }
  if (snapshot.cancelled) {
    FLEECE_LOG_INFO("job", "{}: cancelled at {} of {} bytes", id_, snapshot.offset, snapshot.len);
    if (events_.cancelled) events_.cancelled(snapshot);
  } else {
    if (snapshot.error.empty())
      FLEECE_LOG_INFO("job", "{}: completed", id_);
    else
      FLEECE_LOG_WARN("job", "{}: failed: {}", id_, snapshot.error);
    if (events_.completed) events_.completed(snapshot);
  }
}

void BlockJob::wake() {
  asio::post(strand_, [self = shared_from_this()] { self->timer_.cancel(); });
}

void BlockJob::set_speed(uint64_t bytes_per_second) {
  speed_ = bytes_per_second;
  speed_changed_ = true;
  {
    std::lock_guard g(mu_);
    info_.speed = bytes_per_second;
  }
  wake();
}

void BlockJob::pause() {
  pause_ = true;
  {
    std::lock_guard g(mu_);
    info_.paused = true;
  }
  wake();
}

void BlockJob::resume() {
  pause_ = false;
  {
    std::lock_guard g(mu_);
    info_.paused = false;
  }
  wake();
}

void BlockJob::cancel() {
  cancel_ = true;
  wake();
}

BlockJobInfo BlockJob::info() const {
  std::lock_guard g(mu_);
  return info_;
}

void BlockJob::set_progress(uint64_t offset, uint64_t len) {
  std::lock_guard g(mu_);
  info_.offset = offset;
  info_.len = len;
}

void BlockJob::set_busy(bool busy) {
  std::lock_guard g(mu_);
  info_.busy = busy;
}

void BlockJob::report_error(std::string_view operation, std::string message) {
  BlockJobInfo snapshot;
  {
    std::lock_guard g(mu_);
    info_.error = std::move(message);
    snapshot = info_;
  }
  FLEECE_LOG_WARN("job", "{}: {} error: {}", id_, operation, snapshot.error);
  if (events_.error) events_.error(snapshot, operation, "report");
}

block::Task<bool> BlockJob::pace(uint64_t bytes_done) {
  set_busy(false);
  const uint64_t speed = speed_.load();
  auto now = Clock::now();
  if (speed_changed_.exchange(false)) next_allowed_ = now;  // a new rate starts afresh
  if (speed > 0 && bytes_done > 0) {
    // A running allowance: the step just done costs bytes/speed of time
    // after where the previous allowance ended, so the time the I/O itself
    // took counts towards the rate (restarting from now instead held the
    // rate ~20 % low). After an idle spell (a pause, a slow step) the
    // allowance restarts at most kMaxBurst back, which bounds the burst.
    constexpr auto kMaxBurst = std::chrono::milliseconds(100);
    const auto cost = std::chrono::nanoseconds(
        static_cast<int64_t>(static_cast<long double>(bytes_done) * 1e9L / speed));
    next_allowed_ = std::max(next_allowed_, now - std::chrono::duration_cast<Clock::duration>(kMaxBurst)) +
                    std::chrono::duration_cast<Clock::duration>(cost);
  }
  // Always yield once so that the job never runs step after step without
  // letting pause/cancel and other work in.
  co_await asio::post(strand_, asio::use_awaitable);
  for (;;) {
    if (cancel_) co_return false;
    if (pause_) {
      {
        std::lock_guard g(mu_);
        info_.status = BlockJobStatus::paused;
      }
      timer_.expires_at(Clock::time_point::max());
      boost::system::error_code ignored;  // cancelled by wake()
      auto token = asio::redirect_error(asio::use_awaitable, ignored);
      co_await timer_.async_wait(token);
      if (!pause_) {
        std::lock_guard g(mu_);
        info_.status = BlockJobStatus::running;
      }
      continue;
    }
    if (speed_changed_.exchange(false)) next_allowed_ = Clock::now();
    if (speed_.load() == 0 || Clock::now() >= next_allowed_) break;
    timer_.expires_at(next_allowed_);
    boost::system::error_code ignored;  // cancelled by wake()
    auto token = asio::redirect_error(asio::use_awaitable, ignored);
    co_await timer_.async_wait(token);
  }
  set_busy(true);
  co_return true;
}

}  // namespace fleece::snapshot
