// RangeLock: an asynchronous shared/exclusive lock over ranges of integers
// (copy units of a disk, guest clusters of a qcow2 image), for coroutines on
// any number of io_contexts and threads.
//
// Contract
//  * lock(first, last, shared) completes when no held range overlapping
//    [first, last] conflicts (two shared ranges never conflict); the Guard
//    releases the range when destroyed (or by release()). A range is taken
//    whole or not at all, so a waiter holds nothing.
//  * Fair: a request never overtakes an earlier waiter it conflicts with, so
//    a stream of readers cannot starve the first overwrite of a unit, and
//    vice versa. Non-conflicting requests pass each other.
//  * The uncontended path takes one mutex and does not suspend. A waiter is
//    resumed on its own executor, never inline in the releasing thread.
//  * try_lock() grants only what lock() would grant at once, so it never
//    overtakes a waiter. A lock of [0, 0] exclusive is an async mutex.
//  * Cost is linear in the ranges held and waited on, not in their length:
//    a 2 MiB read of 4 KiB copy units is one entry, not 512. The ranges
//    live are bounded by the requests in flight (tens), so a scan is cheaper
//    than the hash table of per-unit entries this replaced.
//  * Deadlock freedom is the caller's job: never wait for a lock while
//    holding one that a waiter ahead of it may need.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <vector>

namespace fleece::cow {

class Resumer;

class RangeLock {
 public:
  class Guard {
   public:
    Guard() = default;
    Guard(Guard&& o) noexcept : lock_(o.lock_), id_(o.id_) { o.lock_ = nullptr; }
    Guard& operator=(Guard&& o) noexcept {
      if (this != &o) {
        release();
        lock_ = o.lock_;
        id_ = o.id_;
        o.lock_ = nullptr;
      }
      return *this;
    }
    ~Guard() { release(); }
    void release();
    bool owns() const { return lock_ != nullptr; }

   private:
    friend class RangeLock;
    Guard(RangeLock* l, uint64_t id) : lock_(l), id_(id) {}
    RangeLock* lock_ = nullptr;
    uint64_t id_ = 0;
  };

  RangeLock();
  ~RangeLock();
  RangeLock(const RangeLock&) = delete;
  RangeLock& operator=(const RangeLock&) = delete;

  boost::asio::awaitable<Guard> lock(uint64_t first, uint64_t last, bool shared);
  std::optional<Guard> try_lock(uint64_t first, uint64_t last, bool shared);

  // Appends the integers in [from, to) that an exclusive range holds or
  // waits for now, in no order and possibly repeated. Shared ranges are left
  // out: a 4 GiB block-status query holds a million units and changes none.
  void exclusive_in(uint64_t from, uint64_t to, std::vector<uint64_t>* out) const;
  // For tests and statistics.
  std::size_t held_count() const;
  std::size_t waiter_count() const;
  int shared_holders(uint64_t x) const;

 private:
  struct Range {
    uint64_t id, first, last;
    bool shared;
  };
  struct Waiter;
  static bool conflict(const Range& a, const Range& b) {
    return a.first <= b.last && b.first <= a.last && !(a.shared && b.shared);
  }
  bool grantable_locked(const Range& r, const Waiter* stop_at) const;
  void park(const Range& r, Resumer&& resumer);
  void release(uint64_t id);

  mutable std::mutex mu_;
  std::vector<Range> held_;  // unordered; a release swaps the last one in
  std::list<Waiter> waiters_;  // arrival order; a list: empty costs nothing
  uint64_t next_id_ = 1;
};

}  // namespace fleece::cow
