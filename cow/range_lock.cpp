#include "cow/range_lock.hpp"

#include "cow/cbw_resumer.hpp"

#include <algorithm>

namespace fleece::cow {

struct RangeLock::Waiter {
  Range range;
  Resumer resumer;
};

RangeLock::RangeLock() = default;
RangeLock::~RangeLock() = default;

void RangeLock::Guard::release() {
  if (lock_) std::exchange(lock_, nullptr)->release(id_);
}

bool RangeLock::grantable_locked(const Range& r, const Waiter* stop_at) const {
  for (const auto& h : held_)
    if (conflict(h, r)) return false;
  for (const auto& w : waiters_) {
    if (&w == stop_at) break;
    if (conflict(w.range, r)) return false;
  }
  return true;
}

boost::asio::awaitable<RangeLock::Guard> RangeLock::lock(uint64_t first, uint64_t last,
                                                         bool shared) {
  Range r{0, first, last, shared};
  {
    std::lock_guard g(mu_);
    r.id = next_id_++;
    if (grantable_locked(r, nullptr)) {
      held_.push_back(r);
      co_return Guard(this, r.id);
    }
  }
  // Contended: release() hands the range over before resuming us.
  co_await suspend([&](Resumer&& resumer) { park(r, std::move(resumer)); });
  co_return Guard(this, r.id);
}

void RangeLock::park(const Range& r, Resumer&& resumer) {
  std::unique_lock g(mu_);
  if (grantable_locked(r, nullptr)) {  // released while we were suspending
    held_.push_back(r);
    g.unlock();
    resumer.resume();
    return;
  }
  waiters_.push_back(Waiter{r, std::move(resumer)});
}

std::optional<RangeLock::Guard> RangeLock::try_lock(uint64_t first, uint64_t last, bool shared) {
  std::lock_guard g(mu_);
  Range r{next_id_, first, last, shared};
  if (!grantable_locked(r, nullptr)) return std::nullopt;
  ++next_id_;
  held_.push_back(r);
  return Guard(this, r.id);
}

void RangeLock::release(uint64_t id) {
  std::vector<Resumer> wake;
  {
    std::lock_guard g(mu_);
    auto it = std::find_if(held_.begin(), held_.end(), [id](const Range& r) { return r.id == id; });
    if (it == held_.end()) return;  // programming error; nothing sane to do
    *it = held_.back();
    held_.pop_back();
    for (auto w = waiters_.begin(); w != waiters_.end();) {
      if (grantable_locked(w->range, &*w)) {
        held_.push_back(w->range);
        wake.push_back(std::move(w->resumer));
        w = waiters_.erase(w);
      } else {
        ++w;
      }
    }
  }
  for (auto& r : wake) r.resume();
}

void RangeLock::exclusive_in(uint64_t from, uint64_t to, std::vector<uint64_t>* out) const {
  std::lock_guard g(mu_);
  auto add = [&](const Range& r) {
    if (r.shared) return;
    for (uint64_t x = std::max(from, r.first); x < to && x <= r.last; ++x) out->push_back(x);
  };
  for (const auto& h : held_) add(h);
  for (const auto& w : waiters_) add(w.range);
}

std::size_t RangeLock::held_count() const {
  std::lock_guard g(mu_);
  return held_.size();
}

std::size_t RangeLock::waiter_count() const {
  std::lock_guard g(mu_);
  return waiters_.size();
}

int RangeLock::shared_holders(uint64_t x) const {
  std::lock_guard g(mu_);
  return static_cast<int>(std::count_if(held_.begin(), held_.end(), [x](const Range& r) {
    return r.shared && r.first <= x && x <= r.last;
  }));
}

}  // namespace fleece::cow
