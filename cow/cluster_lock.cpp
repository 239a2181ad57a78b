#include "cow/cluster_lock.hpp"

#include <vector>

namespace fleece::cow {

boost::asio::awaitable<ClusterLockTable::Guard> ClusterLockTable::lock(uint64_t cluster,
                                                                        bool exclusive) {
  {
    std::lock_guard lk(mutex_);
    Entry& e = entry_locked(cluster);
    if (e.queue.empty() && grantable(e, exclusive)) {
      if (exclusive) e.exclusive = true;
      else ++e.shared;
      co_return Guard(this, cluster, exclusive);
    }
  }
  // Contended: park; unlock() hands the lock over before resuming us.
  co_await suspend([&](Resumer&& r) {
    std::unique_lock lk(mutex_);
    Entry& e = entry_locked(cluster);
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

boost::asio::awaitable<void> ClusterLockTable::lock_shared_range(uint64_t first, uint64_t last,
                                                                std::vector<Guard>* guards) {
  uint64_t c = first;
  {
    std::lock_guard lk(mutex_);
    for (; c <= last; ++c) {
      Entry& e = entry_locked(c);
      if (!e.queue.empty() || !grantable(e, false)) break;
      ++e.shared;
      guards->emplace_back(this, c, false);
    }
  }
  for (; c <= last; ++c) guards->push_back(co_await lock(c, false));
}

ClusterLockTable::Entry& ClusterLockTable::entry_locked(uint64_t cluster) {
  if (auto it = entries_.find(cluster); it != entries_.end()) return it->second;
  if (spare_.empty()) return entries_[cluster];
  auto node = std::move(spare_.back());
  spare_.pop_back();
  node.key() = cluster;
  node.mapped() = Entry{};
  return entries_.insert(std::move(node)).position->second;
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
    if (e.shared == 0 && !e.exclusive && e.queue.empty()) {
      if (spare_.size() < 1024)
        spare_.push_back(entries_.extract(it));
      else
        entries_.erase(it);
    }
  }
  for (auto& r : wake) r.resume();
}

void ClusterLockTable::active_in(uint64_t from, uint64_t to, std::vector<uint64_t>* out) const {
  std::lock_guard lk(mutex_);
  for (const auto& [c, e] : entries_)
    if (c >= from && c < to) out->push_back(c);
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
