// Resumer and suspend(): the one parking primitive the copy-before-write
// locks are built on.
//
// suspend(park) suspends the calling coroutine and then calls
// park(Resumer&&) on the same thread. park either resumes at once or stores
// the Resumer (under its owner's mutex) for someone else to resume later.
// Resumer::resume() posts the continuation to the coroutine's own executor,
// so a waiter parked by one io_context is never run on another's thread, and
// whoever resumes it (holding a lock, on any thread) never runs it inline.
#pragma once

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <optional>
#include <utility>

namespace fleece::cow {

class Resumer {
 public:
  Resumer() = default;
  template <class Handler>
  explicit Resumer(Handler&& handler)
      : executor_(boost::asio::get_associated_executor(handler)) {
    // An unconnected slot: any_completion_handler would otherwise install
    // its own handler in the coroutine's cancellation slot, clobbering (or
    // being clobbered by) one a waiter installs there itself.
    handler_.emplace(boost::asio::bind_cancellation_slot(boost::asio::cancellation_slot(),
                                                         std::forward<Handler>(handler)));
  }

  // Boost 1.81's any_completion_handler move assignment wraps instead of
  // moving, so assignment here rebuilds by move construction.
  Resumer(Resumer&& o) noexcept : executor_(std::move(o.executor_)) {
    if (o.handler_) handler_.emplace(std::move(*o.handler_));
    o.handler_.reset();
  }
  Resumer& operator=(Resumer&& o) noexcept {
    if (this != &o) {
      executor_ = std::move(o.executor_);
      handler_.reset();
      if (o.handler_) handler_.emplace(std::move(*o.handler_));
      o.handler_.reset();
    }
    return *this;
  }

  explicit operator bool() const { return handler_.has_value() && static_cast<bool>(*handler_); }

  // Schedules the parked coroutine on its executor. Call at most once.
  void resume() {
    auto h = std::move(*handler_);
    handler_.reset();
    boost::asio::post(executor_, [h = std::move(h)]() mutable { std::move(h)(); });
  }

 private:
  boost::asio::any_io_executor executor_;
  std::optional<boost::asio::any_completion_handler<void()>> handler_;
};

template <class Park>
boost::asio::awaitable<void> suspend(Park park) {
  co_await boost::asio::async_initiate<const boost::asio::use_awaitable_t<>, void()>(
      [&park](auto handler) { park(Resumer(std::move(handler))); }, boost::asio::use_awaitable);
}

}  // namespace fleece::cow
