#include "cow/qcow2_range_lock.hpp"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/execution.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <vector>

namespace fleece::cow {

namespace {

// Resumes a waiter on its own executor, never inline in the caller.
void resume(boost::asio::any_completion_handler<void()> h) {
  auto ex = boost::asio::prefer(boost::asio::get_associated_executor(h),
                                boost::asio::execution::blocking.never);
  ex.execute([h = std::move(h)]() mutable { std::move(h)(); });
}

}  // namespace

void Qcow2RangeLock::Guard::release() {
  if (lock_) {
    lock_->release(id_);
    lock_ = nullptr;
  }
}

bool Qcow2RangeLock::grantable_locked(const Range& r, const Waiter* stop_at) const {
  for (const auto& h : held_)
    if (conflict(h, r)) return false;
  for (const auto& w : waiters_) {
    if (&w == stop_at) break;
    if (conflict(w.range, r)) return false;
  }
  return true;
}

boost::asio::awaitable<Qcow2RangeLock::Guard> Qcow2RangeLock::lock(uint64_t first, uint64_t last,
                                                                    bool shared) {
  uint64_t id;
  {
    std::lock_guard g(mu_);
    id = next_id_++;
    Range r{id, first, last, shared};
    if (grantable_locked(r, nullptr)) {
      held_.push_back(r);
      co_return Guard(this, id);
    }
  }
  co_await boost::asio::async_initiate<decltype(boost::asio::use_awaitable), void()>(
      [this, id, first, last, shared](auto handler) {
        std::unique_lock g(mu_);
        Range r{id, first, last, shared};
        if (grantable_locked(r, nullptr)) {  // released while we were suspending
          held_.push_back(r);
          g.unlock();
          resume(std::move(handler));
          return;
        }
        waiters_.push_back(Waiter{r, std::move(handler)});
      },
      boost::asio::use_awaitable);
  co_return Guard(this, id);
}

std::optional<Qcow2RangeLock::Guard> Qcow2RangeLock::try_lock(uint64_t first, uint64_t last,
                                                              bool shared) {
  std::lock_guard g(mu_);
  Range r{next_id_, first, last, shared};
  if (!grantable_locked(r, nullptr)) return std::nullopt;
  ++next_id_;
  held_.push_back(r);
  return Guard(this, r.id);
}

void Qcow2RangeLock::release(uint64_t id) {
  std::vector<boost::asio::any_completion_handler<void()>> wake;
  {
    std::lock_guard g(mu_);
    held_.remove_if([id](const Range& r) { return r.id == id; });
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (grantable_locked(it->range, &*it)) {
        held_.push_back(it->range);
        wake.push_back(std::move(it->handler));
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& h : wake) resume(std::move(h));
}

std::size_t Qcow2RangeLock::held_count() const {
  std::lock_guard g(mu_);
  return held_.size();
}

std::size_t Qcow2RangeLock::waiter_count() const {
  std::lock_guard g(mu_);
  return waiters_.size();
}

}  // namespace fleece::cow
