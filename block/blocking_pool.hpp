// The I/O thread pool: where blocking syscalls run when io_uring cannot
// take them (the thread-pool backend, ioctls, anything without a ring op).
//
// run_on_pool(fn) runs fn() (returning >= 0 or -errno) on a pool thread and
// resumes the calling coroutine on its own executor, keeping that
// executor's context busy (outstanding work) meanwhile. The pool is created
// on first use with enough threads to keep a disk queue busy (blocking calls
// occupy a thread each), and joined at exit.
//
// An io_context destroyed while calls of its coroutines are still on the
// pool waits for them in its shutdown (PoolLink): the calls write into
// buffers those coroutines own, and their completions must not be posted to
// a context that no longer exists. The calls are disk syscalls, so the wait
// is bounded.
//
// Internal to block/: include io_engine.hpp instead.
#pragma once

#include "block/device.hpp"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>

namespace fleece::block::detail {

boost::asio::thread_pool& io_thread_pool();

// Counts one execution context's calls on the pool; its shutdown waits for
// them.
class PoolLink : public boost::asio::execution_context::service {
 public:
  static inline boost::asio::execution_context::id id;

  struct Calls {
    std::mutex mutex;
    std::condition_variable idle;
    std::size_t in_flight = 0;
    void start() {
      std::lock_guard lock(mutex);
      ++in_flight;
    }
    void finish() {
      std::lock_guard lock(mutex);
      if (--in_flight == 0) idle.notify_all();
    }
  };

  explicit PoolLink(boost::asio::execution_context& ctx)
      : service(ctx), calls_(std::make_shared<Calls>()) {}
  const std::shared_ptr<Calls>& calls() const { return calls_; }

 private:
  void shutdown() override {
    std::unique_lock lock(calls_->mutex);
    calls_->idle.wait(lock, [&] { return calls_->in_flight == 0; });
  }
  std::shared_ptr<Calls> calls_;
};

template <class Fn>
Task<int64_t> run_on_pool(Fn fn) {
  return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(int64_t)>(
      [fn = std::move(fn)](auto handler) mutable {
        auto ex = boost::asio::get_associated_executor(handler);
        std::shared_ptr<PoolLink::Calls> calls =
            boost::asio::use_service<PoolLink>(boost::asio::query(ex, boost::asio::execution::context))
                .calls();
        auto work = boost::asio::prefer(ex, boost::asio::execution::outstanding_work.tracked);
        calls->start();
        boost::asio::post(io_thread_pool(), [fn = std::move(fn), handler = std::move(handler),
                                             work = std::move(work), calls]() mutable {
          int64_t res = fn();
          boost::asio::post(work, [handler = std::move(handler), res]() mutable {
            std::move(handler)(res);
          });
          { auto done = std::move(work); }  // last touch of the context
          calls->finish();
        });
      },
      boost::asio::use_awaitable);
}

}  // namespace fleece::block::detail
