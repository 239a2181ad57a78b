// Qcow2RangeLock: an asynchronous shared/exclusive lock over ranges of
// integers (qcow2 guest cluster indexes), for coroutines on any thread.
//
// lock(first, last, shared) suspends until no held range that overlaps
// [first, last] conflicts (two shared ranges never conflict), and returns a
// Guard that releases on destruction. Waiters are granted in arrival order
// among conflicting requests, so a stream of readers cannot starve a writer.
// A lock of the single range [0, 0] exclusive is an async mutex.
// try_lock() is lock() for callers that cannot suspend: it grants only what
// lock() would grant at once, so it never overtakes a waiter.
//
// The uncontended path does not suspend. A suspended waiter is resumed
// through its coroutine's executor (never inline in the releasing thread).
#pragma once

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <list>
#include <mutex>
#include <optional>

namespace fleece::cow {

class Qcow2RangeLock {
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

   private:
    friend class Qcow2RangeLock;
    Guard(Qcow2RangeLock* l, uint64_t id) : lock_(l), id_(id) {}
    Qcow2RangeLock* lock_ = nullptr;
    uint64_t id_ = 0;
  };

  Qcow2RangeLock() = default;
  Qcow2RangeLock(const Qcow2RangeLock&) = delete;
  Qcow2RangeLock& operator=(const Qcow2RangeLock&) = delete;

  boost::asio::awaitable<Guard> lock(uint64_t first, uint64_t last, bool shared);
  std::optional<Guard> try_lock(uint64_t first, uint64_t last, bool shared);

  // For tests and statistics.
  std::size_t held_count() const;
  std::size_t waiter_count() const;

 private:
  struct Range {
    uint64_t id, first, last;
    bool shared;
  };
  struct Waiter {
    Range range;
    boost::asio::any_completion_handler<void()> handler;
  };
  static bool conflict(const Range& a, const Range& b) {
    return a.first <= b.last && b.first <= a.last && !(a.shared && b.shared);
  }
  bool grantable_locked(const Range& r, const Waiter* stop_at) const;
  void release(uint64_t id);

  mutable std::mutex mu_;
  std::list<Range> held_;
  std::list<Waiter> waiters_;
  uint64_t next_id_ = 1;
};

}  // namespace fleece::cow
