// WriteGate: the quiescing point for guest writes on one disk.
//
// Every guest write, write_zeroes and trim enters the gate (takes a Ticket)
// before it touches anything and leaves it (drops the Ticket) when done.
// close() makes new entries wait and completes once every Ticket has been
// dropped; open() lets the waiters in. Between close() completing and
// open(), no guest write is in flight: this is the instant a snapshot is
// taken at, and doing it over several disks (close all, install, open all)
// makes a point in time across disks.
//
// Contract
//  * enter() on an open gate does not suspend. Waiters resume on their own
//    executor, in arrival order.
//  * close() may be called by several parties; the gate opens again when
//    each has called open() (a count, so two overlapping groups cannot open
//    it under each other).
//  * share() takes an extra Ticket without waiting, for work a writer
//    spawns that must finish before the next close() completes (a copy that
//    outlives its writer's cbw-timeout).
#pragma once

#include "cow/cbw_resumer.hpp"

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

namespace fleece::cow {

class WriteGate {
 public:
  class Ticket {
   public:
    Ticket() = default;
    explicit Ticket(WriteGate* gate) : gate_(gate) {}
    Ticket(Ticket&& o) noexcept : gate_(std::exchange(o.gate_, nullptr)) {}
    Ticket& operator=(Ticket&& o) noexcept {
      if (this != &o) {
        reset();
        gate_ = std::exchange(o.gate_, nullptr);
      }
      return *this;
    }
    ~Ticket() { reset(); }
    void reset() {
      if (gate_) std::exchange(gate_, nullptr)->leave();
    }
    bool valid() const { return gate_ != nullptr; }

   private:
    WriteGate* gate_ = nullptr;
  };

  boost::asio::awaitable<Ticket> enter();
  Ticket share(const Ticket& held);  // requires held.valid()
  boost::asio::awaitable<void> close();
  void open();

  bool closed() const;
  uint64_t in_flight() const;
  size_t waiting() const;  // writers parked at the closed gate

 private:
  void leave();

  mutable std::mutex mutex_;
  int close_depth_ = 0;
  uint64_t in_flight_ = 0;
  std::vector<Resumer> enter_waiters_;
  std::vector<Resumer> drain_waiters_;
};

}  // namespace fleece::cow
