// UringService: one io_uring per io_context, as an Asio service.
//
// Why liburing directly and not Asio's random_access_file (which also runs
// on io_uring): fleece needs per-operation RWF_DSYNC (NBD FUA), fdatasync,
// fallocate and fadvise as ring operations, and one fd used from every
// io_context of the server; an Asio file object is bound to one io_context
// and offers none of those operations.
//
// How it works
//  * Created by use_service<UringService>(ctx) on first use from a
//    coroutine running on ctx. ok() is false when the ring could not be set
//    up (EPERM/ENOSYS/ENOMEM, or ctx is not an io_context); callers then use
//    the thread pool.
//  * Batching: async_submit() only fills an SQE and, once per turn of the
//    event loop, posts a flush that submits every queued SQE with one
//    io_uring_enter and reaps what completed inline (page-cache hits).
//  * The ring's eventfd is watched by the io_context (posix::stream_descriptor
//    async_wait) while operations are in flight, so completions are reaped by
//    the event loop without a thread of our own. No wait stays armed when
//    nothing is in flight: io_context::run() returns when the work is done.
//  * Handlers complete with cqe->res (bytes or -errno) on their associated
//    executor (inline when that is this io_context and we run on it).
//  * A mutex guards the ring, so an io_context run by several threads (or a
//    coroutine on a strand) is safe; uncontended, it costs a few ns.
//  * shutdown() (io_context destruction) waits for what the kernel still
//    holds, then destroys the pending handlers without calling them: the
//    buffers they own must not be freed while the kernel writes into them.
//
// Internal to block/: include io_engine.hpp instead.
#pragma once

#include <boost/asio/async_result.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/recycling_allocator.hpp>

#include <liburing.h>

#include <array>
#include <mutex>
#include <optional>
#include <system_error>

namespace fleece::block::detail {

class UringService : public boost::asio::execution_context::service {
 public:
  static inline boost::asio::execution_context::id id;

  explicit UringService(boost::asio::io_context& io);  // via use_service<UringService>(io)
  ~UringService() override;

  bool ok() const noexcept { return ok_; }
  std::error_code init_error() const noexcept { return init_error_; }

  // Queues one SQE, filled by prep(io_uring_sqe*); completes with cqe->res.
  // Requires ok().
  template <class Prep, class CompletionToken>
  auto async_submit(Prep prep, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(int)>(
        [this, prep](auto handler) {
          using Handler = decltype(handler);
          enqueue(Op<Handler>::create(std::move(handler), io_->get_executor()), prep);
        },
        token);
  }

 private:
  // A queued or in-flight operation: its address is the SQE's user_data.
  struct OpBase {
    // invoke = false destroys the handler without calling it (shutdown).
    void (*complete)(OpBase* op, int res, bool invoke);
  };

  template <class Handler>
  struct Op : OpBase {
    using Executor = boost::asio::io_context::executor_type;
    using Alloc = boost::asio::recycling_allocator<Op>;
    Handler handler;
    Executor fallback;

    Op(Handler h, Executor ex) : OpBase{&Op::do_complete}, handler(std::move(h)), fallback(ex) {}

    static Op* create(Handler h, Executor ex) {
      Alloc alloc;
      Op* op = alloc.allocate(1);
      try {
        return new (op) Op(std::move(h), ex);
      } catch (...) {
        alloc.deallocate(op, 1);
        throw;
      }
    }
    static void do_complete(OpBase* base, int res, bool invoke) {
      Op* self = static_cast<Op*>(base);
      Handler h = std::move(self->handler);
      auto ex = boost::asio::get_associated_executor(h, self->fallback);
      self->~Op();
      Alloc().deallocate(self, 1);
      if (invoke) {
        boost::asio::dispatch(ex, [h = std::move(h), res]() mutable { std::move(h)(res); });
      }
    }
  };

  struct Completion {
    OpBase* op;
    int res;
  };
  static constexpr std::size_t kReapBatch = 64;

  template <class Prep>
  void enqueue(OpBase* op, Prep& prep) {
    std::unique_lock lock(mutex_);
    io_uring_sqe* sqe = next_sqe_locked();
    if (!sqe) {
      lock.unlock();
      fail_later(op, -EBUSY);
      return;
    }
    prep(sqe);
    io_uring_sqe_set_data(sqe, op);
    after_enqueue_locked();
  }

  void shutdown() override;

  io_uring_sqe* next_sqe_locked();
  void after_enqueue_locked();
  void fail_later(OpBase* op, int res);
  void flush();
  void on_eventfd(const boost::system::error_code& ec);
  void submit_locked();
  std::size_t reap_locked(std::array<Completion, kReapBatch>& out);
  void arm_locked();
  // Reaps and runs completions until the ring is drained; re-arms the wait.
  void reap_and_run();

  boost::asio::io_context* io_ = nullptr;
  bool ok_ = false;
  std::error_code init_error_;
  io_uring ring_{};
  std::optional<boost::asio::posix::stream_descriptor> eventfd_;

  std::mutex mutex_;
  std::size_t in_flight_ = 0;  // SQEs queued or submitted, not yet reaped
  unsigned unsubmitted_ = 0;
  bool flush_posted_ = false;
  bool wait_armed_ = false;
  bool shut_down_ = false;
};

}  // namespace fleece::block::detail
