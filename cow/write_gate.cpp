#include "cow/write_gate.hpp"

#include <cassert>

namespace fleece::cow {

boost::asio::awaitable<WriteGate::Ticket> WriteGate::enter() {
  for (;;) {
    const uint64_t epoch = co_await wait_open();
    if (auto t = try_enter(epoch); t.valid()) co_return t;
  }
}

boost::asio::awaitable<uint64_t> WriteGate::wait_open() {
  for (;;) {
    {
      std::lock_guard lk(mutex_);
      if (close_depth_ == 0) co_return epoch_;
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

WriteGate::Ticket WriteGate::try_enter_open(uint64_t& epoch) {
  std::lock_guard lk(mutex_);
  if (close_depth_ != 0) return Ticket();
  epoch = epoch_;
  ++in_flight_;
  return Ticket(this);
}

WriteGate::Ticket WriteGate::try_enter(uint64_t epoch) {
  std::lock_guard lk(mutex_);
  if (close_depth_ != 0 || epoch_ != epoch) return Ticket();
  ++in_flight_;
  return Ticket(this);
}

boost::asio::awaitable<void> WriteGate::close() {
  {
    std::lock_guard lk(mutex_);
    ++close_depth_;
    ++epoch_;
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
