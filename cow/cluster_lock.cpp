#include "cow/cluster_lock.hpp"

#include <vector>

namespace fleece::cow {

boost::asio::awaitable<ClusterLockTable::Guard> ClusterLockTable::lock(uint64_t cluster,
                                                                        bool exclusive) {
  {
    std::lock_guard lk(mutex_);
    Entry& e = entries_[cluster];
    if (e.queue.empty() && grantable(e, exclusive)) {
      if (exclusive) e.exclusive = true;
      else ++e.shared;
      co_return Guard(this, cluster, exclusive);
    }
  }
  // Contended: park; unlock() hands the lock over before resuming us.
  co_await suspend([&](Resumer&& r) {
    std::unique_lock lk(mutex_);
    Entry& e = entries_[cluster];
    if (e.queue.empty() && grantable(e, exclusive)) {  // released meanwhile
      if (exclusive) e.exclusive = true;
      else ++e.shared;
      lk.unlock();
      r.resume();
      return;
    }
    e.queue.push_back(Waiter{exclusive, std::move(r)});
  });
  co_return Guard(this, cluster, exclusive);
}

void ClusterLockTable::unlock(uint64_t cluster, bool exclusive) {
  std::vector<Resumer> wake;
  {
    std::lock_guard lk(mutex_);
    auto it = entries_.find(cluster);
    if (it == entries_.end()) return;  // programming error; nothing sane to do
    Entry& e = it->second;
    if (exclusive) e.exclusive = false;
    else --e.shared;
    while (!e.queue.empty() && grantable(e, e.queue.front().exclusive)) {
      Waiter w = std::move(e.queue.front());
      e.queue.pop_front();
      if (w.exclusive) e.exclusive = true;
      else ++e.shared;
      wake.push_back(std::move(w.resumer));
      if (w.exclusive) break;
    }
    if (e.shared == 0 && !e.exclusive && e.queue.empty()) entries_.erase(it);
  }
  for (auto& r : wake) r.resume();
}

size_t ClusterLockTable::active_entries() const {
  std::lock_guard lk(mutex_);
  return entries_.size();
}

int ClusterLockTable::shared_holders(uint64_t cluster) const {
  std::lock_guard lk(mutex_);
  auto it = entries_.find(cluster);
  return it == entries_.end() ? 0 : it->second.shared;
}

}  // namespace fleece::cow
