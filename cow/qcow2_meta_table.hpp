// Qcow2MetaTable: one on-disk metadata table (L1, L2, refcount table or
// refcount block) cached in memory as its exact on-disk bytes.
//
// Keeping the big-endian bytes (not decoded integers) means write-back is a
// copy of the dirty byte range. The dirty range grows with every change and
// is taken, rounded out to the file's I/O alignment, by the metadata flush.
// Not thread-safe: the owning image's metadata mutex guards it.
#pragma once

#include "cow/qcow2_format.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <span>

namespace fleece::cow {

// Zeroed memory aligned for O_DIRECT files (4096 bytes).
class Qcow2Bytes {
 public:
  Qcow2Bytes() = default;
  explicit Qcow2Bytes(std::size_t size) : size_(size) {
    const std::size_t cap = qcow2::align_up(std::max<std::size_t>(size, 1), 4096);
    data_.reset(static_cast<std::byte*>(std::aligned_alloc(4096, cap)));
    if (!data_) throw std::bad_alloc();
    std::fill_n(data_.get(), cap, std::byte{0});
  }
  std::byte* data() { return data_.get(); }
  const std::byte* data() const { return data_.get(); }
  std::size_t size() const { return size_; }
  std::span<std::byte> span() { return {data_.get(), size_}; }
  std::span<const std::byte> span() const { return {data_.get(), size_}; }

 private:
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  std::unique_ptr<std::byte, Free> data_;
  std::size_t size_ = 0;
};

// A byte range of a table to write back, copied out under the metadata lock.
struct Qcow2MetaWrite {
  uint64_t file_offset = 0;
  Qcow2Bytes bytes;
};

class Qcow2MetaTable {
 public:
  Qcow2MetaTable(uint64_t host_offset, std::size_t size) : host_offset_(host_offset), bytes_(size) {}

  uint64_t host_offset() const { return host_offset_; }
  std::size_t size() const { return bytes_.size(); }
  std::byte* data() { return bytes_.data(); }
  const std::byte* data() const { return bytes_.data(); }

  uint64_t entry(std::size_t i) const { return qcow2::load_be64(bytes_.data() + i * 8); }
  void set_entry(std::size_t i, uint64_t v) {
    qcow2::store_be64(bytes_.data() + i * 8, v);
    mark_dirty(i * 8, i * 8 + 8);
  }

  void mark_dirty(std::size_t lo, std::size_t hi) {
    dirty_lo_ = std::min(dirty_lo_, lo);
    dirty_hi_ = std::max(dirty_hi_, hi);
  }
  void mark_all_dirty() { mark_dirty(0, bytes_.size()); }
  bool dirty() const { return dirty_lo_ < dirty_hi_; }

  // Copies the dirty range, rounded out to `align` within the table, and
  // marks the table clean.
  Qcow2MetaWrite take_dirty(std::size_t align) {
    const std::size_t lo = qcow2::align_down(dirty_lo_, align);
    const std::size_t hi = std::min<std::size_t>(qcow2::align_up(dirty_hi_, align), bytes_.size());
    Qcow2MetaWrite w{host_offset_ + lo, Qcow2Bytes(hi - lo)};
    std::copy_n(bytes_.data() + lo, hi - lo, w.bytes.data());
    dirty_lo_ = SIZE_MAX;
    dirty_hi_ = 0;
    return w;
  }

 private:
  uint64_t host_offset_;
  Qcow2Bytes bytes_;
  std::size_t dirty_lo_ = SIZE_MAX;
  std::size_t dirty_hi_ = 0;
};

}  // namespace fleece::cow
