#include "cow/qcow2_l2_cache.hpp"

namespace fleece::cow {

Qcow2L2Cache::Table Qcow2L2Cache::find(uint64_t l1_index) {
  auto it = slots_.find(l1_index);
  if (it == slots_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  return it->second.table;
}

Qcow2L2Cache::Table Qcow2L2Cache::insert(uint64_t l1_index, Table t) {
  if (auto have = find(l1_index)) return have;
  lru_.push_front(l1_index);
  slots_.emplace(l1_index, Slot{t, lru_.begin()});
  bytes_ += t->size();
  trim_except(l1_index);
  return t;
}

void Qcow2L2Cache::trim() { trim_except(UINT64_MAX); }

void Qcow2L2Cache::trim_except(uint64_t keep_index) {
  // From the least recently used end; stops once within the limit, or when
  // only one table is left (the limit never empties the cache).
  for (auto it = lru_.end(); it != lru_.begin() && bytes_ > limit_ && slots_.size() > 1;) {
    --it;
    auto s = slots_.find(*it);
    const Slot& slot = s->second;
    if (*it == keep_index || slot.writing || slot.table->dirty() || slot.table.use_count() > 1)
      continue;
    bytes_ -= slot.table->size();
    ++evictions_;
    slots_.erase(s);
    it = lru_.erase(it);
  }
}

bool Qcow2L2Cache::over_limit_dirty() const {
  if (bytes_ <= limit_) return false;
  for (const auto& [i, slot] : slots_)
    if (slot.table->dirty()) return true;
  return false;
}

void Qcow2L2Cache::take_dirty(std::size_t align, std::vector<Qcow2MetaWrite>& out) {
  for (auto& [i, slot] : slots_) {
    if (!slot.table->dirty()) continue;
    out.push_back(slot.table->take_dirty(align));
    slot.writing = true;
  }
}

void Qcow2L2Cache::end_writeback() {
  for (auto& [i, slot] : slots_) slot.writing = false;
}

void Qcow2L2Cache::mark_all_dirty() {
  for (auto& [i, slot] : slots_) slot.table->mark_all_dirty();
}

}  // namespace fleece::cow
