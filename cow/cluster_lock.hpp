// ClusterLockTable: asynchronous shared/exclusive locks, one per cluster
// number, for coroutines on any number of io_contexts and threads.
//
// Contract
//  * lock_shared(c) / lock_exclusive(c) complete when the caller owns the
//    lock; the returned Guard releases it when destroyed (or by release()).
//  * Fair: waiters are granted in arrival order (a run of shared waiters at
//    the head is granted together), so a stream of readers cannot starve the
//    first overwrite of a cluster, and vice versa.
//  * An uncontended lock is taken without suspending. A waiter is resumed on
//    its own executor.
//  * Entries exist only while a cluster is locked or waited on, so the table
//    costs nothing for idle clusters.
//  * Deadlock freedom is the caller's job; copy-before-write keeps it by
//    holding at most one exclusive lock and never waiting while holding it,
//    and by taking several shared locks only in ascending cluster order.
#pragma once

#include "cow/cbw_resumer.hpp"

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace fleece::cow {

class ClusterLockTable {
 public:
  class Guard {
   public:
    Guard() = default;
    Guard(ClusterLockTable* table, uint64_t cluster, bool exclusive)
        : table_(table), cluster_(cluster), exclusive_(exclusive) {}
    Guard(Guard&& o) noexcept
        : table_(std::exchange(o.table_, nullptr)), cluster_(o.cluster_), exclusive_(o.exclusive_) {}
    Guard& operator=(Guard&& o) noexcept {
      if (this != &o) {
        release();
        table_ = std::exchange(o.table_, nullptr);
        cluster_ = o.cluster_;
        exclusive_ = o.exclusive_;
      }
      return *this;
    }
    ~Guard() { release(); }
    void release() {
      if (table_) std::exchange(table_, nullptr)->unlock(cluster_, exclusive_);
    }
    bool owns() const { return table_ != nullptr; }
    uint64_t cluster() const { return cluster_; }

   private:
    ClusterLockTable* table_ = nullptr;
    uint64_t cluster_ = 0;
    bool exclusive_ = false;
  };

  boost::asio::awaitable<Guard> lock_shared(uint64_t cluster) { return lock(cluster, false); }
  boost::asio::awaitable<Guard> lock_exclusive(uint64_t cluster) { return lock(cluster, true); }
  // Shared locks on [first, last], ascending, appended to *guards: those
  // free now under one acquisition of the table, the rest one by one.
  boost::asio::awaitable<void> lock_shared_range(uint64_t first, uint64_t last,
                                                 std::vector<Guard>* guards);

  // Appends the clusters in [from, to) locked or waited on now.
  void active_in(uint64_t from, uint64_t to, std::vector<uint64_t>* out) const;
  // For tests and assertions: number of clusters with holders or waiters.
  size_t active_entries() const;
  // Shared holders of a cluster right now (tests).
  int shared_holders(uint64_t cluster) const;

 private:
  struct Waiter {
    bool exclusive;
    Resumer resumer;
  };
  struct Entry {
    int shared = 0;
    bool exclusive = false;
    std::list<Waiter> queue;  // a list: empty costs no allocation
  };
  using Entries = std::unordered_map<uint64_t, Entry>;

  boost::asio::awaitable<Guard> lock(uint64_t cluster, bool exclusive);
  void unlock(uint64_t cluster, bool exclusive);
  static bool grantable(const Entry& e, bool exclusive) {
    return exclusive ? (e.shared == 0 && !e.exclusive) : !e.exclusive;
  }

  // Under mutex_: the entry of a cluster, made from a spare node if any.
  Entry& entry_locked(uint64_t cluster);

  mutable std::mutex mutex_;
  Entries entries_;
  // Nodes of entries that went, kept for reuse: a frozen read locks every
  // copy unit it spans (512 for 2 MiB of 4 KiB units), each a node.
  std::vector<Entries::node_type> spare_;
};

}  // namespace fleece::cow
