// BlockJob: what every background job on a disk shares (QMP
// query-block-jobs, block-job-set-speed/-pause/-resume/-cancel, and the
// BLOCK_JOB_* events).
//
// A job is made by its subclass's factory, then start()ed: run() is spawned
// on the job's strand. Status goes created -> running (<-> paused) ->
// concluded; `ready` is for jobs that wait for a completion command (commit
// below the active layer never does). When run() returns, exactly one of
// the events fires: cancelled (the job stopped on request), or completed
// (with info().error set when it failed). error fires before completed for
// an I/O error, with the operation ("read"/"write") and the action taken
// ("report": the job ends).
//
// Pacing: run() calls pace(bytes) between steps. It accounts the bytes
// against `speed` (bytes per second, 0 = unlimited), sleeps on an Asio timer
// until the rate allows the next step, and always yields at least once so
// pause and cancel take effect between any two steps. It returns false when
// the job was cancelled. While paused, pace() waits for resume() (or cancel).
// set_speed() takes effect at once, also in the middle of a sleep.
//
// Threading: control methods and info() may be called from any thread; they
// wake the job on its strand. Events are called on the job's strand.
#pragma once

#include "block/device.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace fleece::snapshot {

enum class BlockJobStatus { created, running, paused, ready, concluded };
std::string_view to_string(BlockJobStatus s);

struct BlockJobInfo {
  std::string id;
  std::string type;    // "commit"
  std::string device;  // the disk the job works on
  BlockJobStatus status = BlockJobStatus::created;
  uint64_t offset = 0;  // progress, bytes
  uint64_t len = 0;     // bytes to go over in all
  uint64_t speed = 0;   // bytes per second, 0 = unlimited
  bool busy = false;    // doing I/O (not sleeping or paused)
  bool paused = false;  // a pause was requested and not resumed
  bool cancelled = false;
  std::string error;    // why it failed ("" = it did not)
};

struct BlockJobEvents {
  std::function<void(const BlockJobInfo&)> completed;
  std::function<void(const BlockJobInfo&)> cancelled;
  std::function<void(const BlockJobInfo&, std::string_view operation, std::string_view action)>
      error;
};

class BlockJob : public std::enable_shared_from_this<BlockJob> {
 public:
  virtual ~BlockJob();

  void start();
  void set_speed(uint64_t bytes_per_second);
  void pause();
  void resume();
  void cancel();
  BlockJobInfo info() const;
  const std::string& id() const { return id_; }

 protected:
  BlockJob(boost::asio::any_io_executor executor, std::string id, std::string type,
           std::string device, uint64_t speed, BlockJobEvents events);

  // The work. Returns std::errc::operation_canceled when it stopped because
  // pace() said so, another error (after report_error) when it failed.
  virtual block::Task<std::error_code> run() = 0;

  block::Task<bool> pace(uint64_t bytes_done);
  bool cancel_requested() const { return cancel_.load(); }
  void set_progress(uint64_t offset, uint64_t len);
  void set_busy(bool busy);
  // Records the failure and fires the error event.
  void report_error(std::string_view operation, std::string message);
  boost::asio::strand<boost::asio::any_io_executor>& strand() { return strand_; }

 private:
  block::Task<void> body();
  void wake();  // cancels the timer on the strand

  using Clock = std::chrono::steady_clock;

  boost::asio::strand<boost::asio::any_io_executor> strand_;
  boost::asio::steady_timer timer_;  // strand only
  Clock::time_point next_allowed_{};  // strand only
  const std::string id_;
  BlockJobEvents events_;

  std::atomic<bool> cancel_{false};
  std::atomic<bool> pause_{false};
  std::atomic<uint64_t> speed_{0};
  std::atomic<bool> speed_changed_{false};

  mutable std::mutex mu_;  // guards info_
  BlockJobInfo info_;
};

}  // namespace fleece::snapshot
