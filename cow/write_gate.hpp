// WriteGate: the quiescing point for guest writes on one disk.
//
// A guest write, write_zeroes or trim holds a Ticket while it changes the
// disk and drops it when done. close() makes new entries wait and
// completes once every Ticket has been dropped; open() lets the waiters in.
// Between close() completing and open(), nothing changes the disk: this is
// the instant a snapshot is taken at, and doing it over several disks
// (close all, install, open all) makes a point in time across disks.
//
// Writes that first copy old data aside (copy-before-write) do not hold a
// Ticket while they copy: they note the gate's epoch (wait_open()), copy,
// then try_enter(epoch). Every close() starts a new epoch, so a write whose
// copies straddled a close gets no Ticket, waits for open and copies again
// for the chain as it is now. Such a write has not touched the disk, so it
// simply falls after the point in time, as any write still unacknowledged
// at a crash may: close() waits only for writes already changing the disk
// (microseconds), never for copies (milliseconds under load).
//
// Contract
//  * enter() (= wait_open() + try_enter() until it succeeds) and
//    wait_open() on an open gate do not suspend. Waiters resume on their own
//    executor, in arrival order.
//  * close() may be called by several parties; the gate opens again when
//    each has called open() (a count, so two overlapping groups cannot open
//    it under each other).
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
  // Waits until the gate is open; returns the current epoch.
  boost::asio::awaitable<uint64_t> wait_open();
  // A Ticket if the gate is open and still in `epoch`, else an invalid one.
  Ticket try_enter(uint64_t epoch);
  // A Ticket (and the epoch) if the gate is open, else an invalid one.
  Ticket try_enter_open(uint64_t& epoch);
  boost::asio::awaitable<void> close();
  void open();

  bool closed() const;
  uint64_t in_flight() const;
  size_t waiting() const;  // writers parked at the closed gate

 private:
  void leave();

  mutable std::mutex mutex_;
  int close_depth_ = 0;
  uint64_t epoch_ = 0;  // closes so far
  uint64_t in_flight_ = 0;
  std::vector<Resumer> enter_waiters_;
  std::vector<Resumer> drain_waiters_;
};

}  // namespace fleece::cow
