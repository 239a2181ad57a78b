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
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <utility>

namespace fleece::cow {

class Resumer {
 public:
  Resumer() = default;
  template <class Handler>
  explicit Resumer(Handler&& handler)
      : executor_(boost::asio::get_associated_executor(handler)),
        handler_(std::forward<Handler>(handler)) {}

  Resumer(Resumer&&) noexcept = default;
  Resumer& operator=(Resumer&&) noexcept = default;

  explicit operator bool() const { return static_cast<bool>(handler_); }

  // Schedules the parked coroutine on its executor. Call at most once.
  void resume() {
    boost::asio::post(executor_, [h = std::move(handler_)]() mutable { std::move(h)(); });
  }

 private:
  boost::asio::any_io_executor executor_;
  boost::asio::any_completion_handler<void()> handler_;
};

template <class Park>
boost::asio::awaitable<void> suspend(Park park) {
  co_await boost::asio::async_initiate<const boost::asio::use_awaitable_t<>, void()>(
      [&park](auto handler) { park(Resumer(std::move(handler))); }, boost::asio::use_awaitable);
}

}  // namespace fleece::cow
