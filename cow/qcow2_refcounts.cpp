#include "cow/qcow2_refcounts.hpp"

#include "util/errors.hpp"

#include <algorithm>

namespace fleece::cow {

using namespace qcow2;

Qcow2Refcounts::Qcow2Refcounts(uint32_t cluster_bits, uint32_t refcount_order)
    : cluster_bits_(cluster_bits),
      order_(refcount_order),
      entries_per_block_((uint64_t{1} << cluster_bits) * 8 >> refcount_order),
      max_refcount_(refcount_order == 6 ? ~uint64_t{0}
                                        : (uint64_t{1} << (1u << refcount_order)) - 1) {}

void Qcow2Refcounts::init_empty(uint64_t table_offset, uint32_t clusters,
                                uint64_t first_free_cluster) {
  table_ = std::make_unique<Qcow2MetaTable>(table_offset, clusters * cluster_size());
  table_->mark_all_dirty();
  blocks_.clear();
  free_.clear();
  cursor_ = first_free_cluster;
  allocated_ = 0;
  table_moved_ = false;
}

void Qcow2Refcounts::load_table(std::unique_ptr<Qcow2MetaTable> table) {
  table_ = std::move(table);
  blocks_.clear();
  blocks_.resize(table_entries());
}

void Qcow2Refcounts::load_block(uint64_t index, std::unique_ptr<Qcow2MetaTable> block) {
  if (index >= blocks_.size()) blocks_.resize(index + 1);
  blocks_[index] = std::move(block);
}

void Qcow2Refcounts::finish_load() {
  uint64_t last_used = 0;
  bool any = false;
  allocated_ = 0;
  for (uint64_t b = 0; b < blocks_.size(); ++b) {
    if (!blocks_[b]) continue;
    for (uint64_t i = 0; i < entries_per_block_; ++i) {
      if (get_in(*blocks_[b], i) == 0) continue;
      ++allocated_;
      last_used = b * entries_per_block_ + i;
      any = true;
    }
  }
  cursor_ = any ? last_used + 1 : 0;
  // Free clusters are listed from the blocks that exist only: a hostile
  // table with one block far out must not make this loop over a huge gap
  // (clusters of ranges without a block are simply not reused).
  free_.clear();
  for (uint64_t b = blocks_.size(); b-- > 0;) {
    if (!blocks_[b]) continue;
    for (uint64_t i = entries_per_block_; i-- > 0;) {
      const uint64_t c = b * entries_per_block_ + i;
      if (c < cursor_ && get_in(*blocks_[b], i) == 0) free_.push_back(c);
    }
  }
}

uint64_t Qcow2Refcounts::block_count() const {
  return uint64_t(std::count_if(blocks_.begin(), blocks_.end(), [](auto& b) { return b != nullptr; }));
}

uint64_t Qcow2Refcounts::get_in(const Qcow2MetaTable& b, uint64_t i) const {
  const std::byte* d = b.data();
  switch (order_) {
    case 0:
    case 1:
    case 2: {
      const unsigned bits = 1u << order_;
      const uint64_t per_byte = 8 / bits;
      const unsigned shift = unsigned(i % per_byte) * bits;
      return (uint64_t(d[i / per_byte]) >> shift) & ((1u << bits) - 1);
    }
    case 3: return uint64_t(d[i]);
    case 4: return load_be16(d + i * 2);
    case 5: return load_be32(d + i * 4);
    default: return load_be64(d + i * 8);
  }
}

void Qcow2Refcounts::set_in(Qcow2MetaTable& b, uint64_t i, uint64_t v) {
  std::byte* d = b.data();
  switch (order_) {
    case 0:
    case 1:
    case 2: {
      const unsigned bits = 1u << order_;
      const uint64_t per_byte = 8 / bits;
      const unsigned shift = unsigned(i % per_byte) * bits;
      const unsigned mask = ((1u << bits) - 1) << shift;
      const unsigned old = unsigned(d[i / per_byte]);
      d[i / per_byte] = std::byte((old & ~mask) | ((unsigned(v) << shift) & mask));
      b.mark_dirty(i / per_byte, i / per_byte + 1);
      return;
    }
    case 3: d[i] = std::byte(v); b.mark_dirty(i, i + 1); return;
    case 4: store_be16(d + i * 2, uint16_t(v)); b.mark_dirty(i * 2, i * 2 + 2); return;
    case 5: store_be32(d + i * 4, uint32_t(v)); b.mark_dirty(i * 4, i * 4 + 4); return;
    default: store_be64(d + i * 8, v); b.mark_dirty(i * 8, i * 8 + 8); return;
  }
}

uint64_t Qcow2Refcounts::get(uint64_t offset) const {
  const uint64_t c = offset >> cluster_bits_;
  const uint64_t b = c / entries_per_block_;
  if (b >= blocks_.size() || !blocks_[b]) return 0;
  return get_in(*blocks_[b], c % entries_per_block_);
}

std::error_code Qcow2Refcounts::grow_table(uint64_t min_entries) {
  const uint64_t cs = cluster_size();
  const uint64_t old_offset = table_->host_offset();
  const uint64_t old_clusters = table_->size() / cs;
  const uint64_t entries = std::max(min_entries, table_entries() * 2);
  const uint64_t clusters = div_up(entries * 8, cs);
  if (clusters * cs > kMaxRefcountTableBytes) return make_error_code(std::errc::file_too_large);
  const uint64_t start = cursor_;
  cursor_ += clusters;
  auto table = std::make_unique<Qcow2MetaTable>(start * cs, clusters * cs);
  std::copy_n(table_->data(), table_->size(), table->data());
  table->mark_all_dirty();
  table_ = std::move(table);
  if (blocks_.size() < table_entries()) blocks_.resize(table_entries());
  table_moved_ = true;
  for (uint64_t k = start; k < start + clusters; ++k)
    if (auto ec = set(k * cs, 1)) return ec;
  for (uint64_t i = 0; i < old_clusters; ++i) released_.push_back(old_offset + i * cs);
  return {};
}

std::error_code Qcow2Refcounts::ensure_block(uint64_t index) {
  if (index < blocks_.size() && blocks_[index]) return {};
  if (index >= table_entries()) {
    if (auto ec = grow_table(index + 1)) return ec;
    if (index < blocks_.size() && blocks_[index]) return {};  // growing placed it
  }
  if (blocks_.size() <= index) blocks_.resize(index + 1);
  const uint64_t c = cursor_++;
  const uint64_t cs = cluster_size();
  blocks_[index] = std::make_unique<Qcow2MetaTable>(c * cs, cs);
  blocks_[index]->mark_all_dirty();
  table_->set_entry(index, c * cs);
  return set(c * cs, 1);
}

std::error_code Qcow2Refcounts::set(uint64_t offset, uint64_t value) {
  return set_value(offset, value, true);
}

std::error_code Qcow2Refcounts::set_value(uint64_t offset, uint64_t value, bool reusable) {
  if (value > max_refcount_) return make_error_code(Errc::corrupt_image);
  const uint64_t c = offset >> cluster_bits_;
  if (c >= cursor_) {
    // Only image creation sets refcounts past the cursor; the gap is free.
    for (uint64_t k = cursor_; k < c; ++k) free_.push_back(k);
    cursor_ = c + 1;
  }
  const uint64_t b = c / entries_per_block_;
  if (auto ec = ensure_block(b)) return ec;
  const uint64_t old = get_in(*blocks_[b], c % entries_per_block_);
  set_in(*blocks_[b], c % entries_per_block_, value);
  if (old == 0 && value != 0) ++allocated_;
  if (old != 0 && value == 0) {
    --allocated_;
    if (reusable) free_.push_back(c);
  }
  return {};
}

Result<uint64_t> Qcow2Refcounts::alloc() {
  while (!free_.empty()) {
    const uint64_t c = free_.back();
    free_.pop_back();
    if (get(c << cluster_bits_) != 0) continue;  // stale entry: reused meanwhile
    if (auto ec = set(c << cluster_bits_, 1)) return ec;
    return c << cluster_bits_;
  }
  const uint64_t c = cursor_++;
  if (auto ec = set(c << cluster_bits_, 1)) return ec;
  return c << cluster_bits_;
}

Result<uint64_t> Qcow2Refcounts::alloc_contiguous(uint64_t n) {
  const uint64_t start = cursor_;
  cursor_ += n;
  for (uint64_t k = start; k < start + n; ++k)
    if (auto ec = set(k << cluster_bits_, 1)) return ec;
  return start << cluster_bits_;
}

std::error_code Qcow2Refcounts::release(uint64_t offset) { return decrement(offset, true); }

std::error_code Qcow2Refcounts::retire(uint64_t offset) { return decrement(offset, false); }

std::error_code Qcow2Refcounts::decrement(uint64_t offset, bool reusable) {
  const uint64_t v = get(offset);
  if (v == 0) return make_error_code(Errc::corrupt_image);  // double free
  return set_value(offset, v - 1, reusable);
}

Qcow2Refcounts::Writes Qcow2Refcounts::take_writes(std::size_t align) {
  Writes w;
  for (auto& b : blocks_)
    if (b && b->dirty()) w.blocks.push_back(b->take_dirty(align));
  if (table_->dirty()) w.table.push_back(table_->take_dirty(align));
  w.table_moved = table_moved_;
  table_moved_ = false;
  return w;
}

bool Qcow2Refcounts::dirty() const {
  if (table_->dirty() || table_moved_) return true;
  for (auto& b : blocks_)
    if (b && b->dirty()) return true;
  return false;
}

std::vector<uint64_t> Qcow2Refcounts::take_released() { return std::exchange(released_, {}); }

void Qcow2Refcounts::mark_all_dirty() {
  table_->mark_all_dirty();
  for (auto& b : blocks_)
    if (b) b->mark_all_dirty();
  table_moved_ = true;
}

}  // namespace fleece::cow
