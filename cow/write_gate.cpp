#include "cow/write_gate.hpp"

#include <cassert>

namespace fleece::cow {

boost::asio::awaitable<WriteGate::Ticket> WriteGate::enter() {
  for (;;) {
    {
      std::lock_guard lk(mutex_);
      if (close_depth_ == 0) {
        ++in_flight_;
        co_return Ticket(this);
      }
    }
    co_await suspend([&](Resumer&& r) {
      std::unique_lock lk(mutex_);
      if (close_depth_ == 0) {
        lk.unlock();
        r.resume();
        return;
      }
      enter_waiters_.push_back(std::move(r));
    });
    // Re-check: the gate may have closed again before we ran.
  }
}

WriteGate::Ticket WriteGate::share(const Ticket& held) {
  assert(held.valid());
  (void)held;
  std::lock_guard lk(mutex_);
  ++in_flight_;
  return Ticket(this);
}

boost::asio::awaitable<void> WriteGate::close() {
  {
    std::lock_guard lk(mutex_);
    ++close_depth_;
    if (in_flight_ == 0) co_return;
  }
  co_await suspend([&](Resumer&& r) {
    std::unique_lock lk(mutex_);
    if (in_flight_ == 0) {
      lk.unlock();
      r.resume();
      return;
    }
    drain_waiters_.push_back(std::move(r));
  });
}

void WriteGate::open() {
  std::vector<Resumer> wake;
  {
    std::lock_guard lk(mutex_);
    assert(close_depth_ > 0);
    if (close_depth_ > 0 && --close_depth_ == 0) wake.swap(enter_waiters_);
  }
  for (auto& r : wake) r.resume();
}

void WriteGate::leave() {
  std::vector<Resumer> wake;
  {
    std::lock_guard lk(mutex_);
    if (--in_flight_ == 0) wake.swap(drain_waiters_);
  }
  for (auto& r : wake) r.resume();
}

bool WriteGate::closed() const {
  std::lock_guard lk(mutex_);
  return close_depth_ > 0;
}

uint64_t WriteGate::in_flight() const {
  std::lock_guard lk(mutex_);
  return in_flight_;
}

size_t WriteGate::waiting() const {
  std::lock_guard lk(mutex_);
  return enter_waiters_.size();
}

}  // namespace fleece::cow
