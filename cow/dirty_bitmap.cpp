#include "cow/dirty_bitmap.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

namespace fleece::cow {

namespace {

constexpr uint64_t low_bits(unsigned n) { return n >= 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1; }

}  // namespace

bool DirtyBitmap::valid_granularity(uint64_t g) {
  return g >= kMinGranularity && g <= kMaxGranularity && std::has_single_bit(g);
}

Result<std::shared_ptr<DirtyBitmap>> DirtyBitmap::create(std::string name, uint64_t size,
                                                         uint64_t granularity) {
  if (name.empty() || name.size() > kMaxNameLength || !valid_granularity(granularity))
    return make_error_code(std::errc::invalid_argument);
  const uint32_t bits = uint32_t(std::countr_zero(granularity));
  const uint64_t granules = (size >> bits) + ((size & (granularity - 1)) != 0);
  if ((granules + 7) / 8 > kMaxBytes) return make_error_code(std::errc::file_too_large);
  return std::shared_ptr<DirtyBitmap>(new DirtyBitmap(std::move(name), size, bits));
}

DirtyBitmap::DirtyBitmap(std::string name, uint64_t size, uint32_t granularity_bits)
    : name_(std::move(name)),
      size_(size),
      granularity_bits_(granularity_bits),
      granules_((size >> granularity_bits) + ((size & low_bits(granularity_bits)) != 0)),
      words_((granules_ + 63) / 64) {}

DirtyBitmap::DirtyBitmap(const DirtyBitmap& o)
    : name_(o.name_), size_(o.size_), granularity_bits_(o.granularity_bits_), granules_(o.granules_) {
  std::lock_guard g(o.mu_);
  words_ = o.words_;
  count_ = o.count_;
  enabled_ = o.enabled_;
  frozen_ = o.frozen_;
  inconsistent_ = o.inconsistent_;
  persistent_ = o.persistent_;
}

bool DirtyBitmap::enabled() const {
  std::lock_guard g(mu_);
  return enabled_;
}

void DirtyBitmap::set_enabled(bool enabled) {
  std::lock_guard g(mu_);
  if (!frozen_ && !inconsistent_) enabled_ = enabled;
}

bool DirtyBitmap::frozen() const {
  std::lock_guard g(mu_);
  return frozen_;
}

bool DirtyBitmap::inconsistent() const {
  std::lock_guard g(mu_);
  return inconsistent_;
}

void DirtyBitmap::set_inconsistent() {
  std::lock_guard g(mu_);
  inconsistent_ = true;
  enabled_ = false;
}

bool DirtyBitmap::persistent() const {
  std::lock_guard g(mu_);
  return persistent_;
}

void DirtyBitmap::set_persistent(bool persistent) {
  std::lock_guard g(mu_);
  persistent_ = persistent;
}

void DirtyBitmap::freeze() {
  std::lock_guard g(mu_);
  frozen_ = true;
  enabled_ = false;
}

std::shared_ptr<DirtyBitmap> DirtyBitmap::frozen_copy() const {
  std::shared_ptr<DirtyBitmap> copy(new DirtyBitmap(*this));
  copy->freeze();
  return copy;
}

std::shared_ptr<DirtyBitmap> DirtyBitmap::fresh_like() const {
  std::shared_ptr<DirtyBitmap> b(new DirtyBitmap(name_, size_, granularity_bits_));
  b->persistent_ = persistent();
  return b;
}

// ---------------------------------------------------------------- bits

void DirtyBitmap::set_range_locked(uint64_t first, uint64_t end) {
  end = std::min(end, granules_);
  while (first < end) {
    const uint64_t w = first >> 6;
    const unsigned lo = unsigned(first & 63);
    const unsigned n = unsigned(std::min<uint64_t>(64 - lo, end - first));
    const uint64_t mask = low_bits(n) << lo;
    count_ += unsigned(std::popcount(mask & ~words_[w]));
    words_[w] |= mask;
    first += n;
  }
}

void DirtyBitmap::set_bytes_locked(uint64_t offset, uint64_t length) {
  if (length == 0 || offset >= size_) return;
  const uint64_t end = std::min(size_, offset + std::min(length, size_ - offset));
  set_range_locked(offset >> granularity_bits_,
                   ((end - 1) >> granularity_bits_) + 1);
}

uint64_t DirtyBitmap::next_locked(uint64_t g, uint64_t end, bool value) const {
  while (g < end) {
    const uint64_t w = g >> 6;
    const unsigned lo = unsigned(g & 63);
    uint64_t bits = (value ? words_[w] : ~words_[w]) >> lo;
    if (bits != 0) return std::min(end, g + unsigned(std::countr_zero(bits)));
    g += 64 - lo;
  }
  return end;
}

void DirtyBitmap::mark(uint64_t offset, uint64_t length) {
  std::lock_guard g(mu_);
  if (!enabled_) return;
  set_bytes_locked(offset, length);
}

std::error_code DirtyBitmap::set_dirty(uint64_t offset, uint64_t length) {
  std::lock_guard g(mu_);
  if (frozen_ || inconsistent_) return make_error_code(std::errc::operation_not_permitted);
  set_bytes_locked(offset, length);
  return {};
}

std::error_code DirtyBitmap::clear() {
  std::lock_guard g(mu_);
  if (frozen_ || inconsistent_) return make_error_code(std::errc::operation_not_permitted);
  ZeroedVector<uint64_t>(words_.size()).swap(words_);  // fresh zero pages, no pass over the old
  count_ = 0;
  return {};
}

std::error_code DirtyBitmap::merge_from(const DirtyBitmap& other) {
  if (&other == this) return {};
  if (other.size_ != size_) return make_error_code(std::errc::invalid_argument);
  if (other.inconsistent()) return make_error_code(std::errc::operation_not_permitted);
  // Copy the source first: two bitmaps' locks are never held together.
  std::vector<uint64_t> src;
  {
    std::lock_guard g(other.mu_);
    src.assign(other.words_.begin(), other.words_.end());
  }
  std::lock_guard g(mu_);
  if (frozen_ || inconsistent_) return make_error_code(std::errc::operation_not_permitted);
  if (other.granularity_bits_ == granularity_bits_) {
    for (std::size_t i = 0; i < words_.size(); ++i) {
      count_ += unsigned(std::popcount(src[i] & ~words_[i]));
      words_[i] |= src[i];
    }
    return {};
  }
  // Each set source bit marks its bytes; zero words (most of a large,
  // sparse bitmap) are passed over whole.
  for (std::size_t w = 0; w < src.size(); ++w) {
    for (uint64_t word = src[w]; word != 0; word &= word - 1) {
      const uint64_t i = (uint64_t{w} << 6) + unsigned(std::countr_zero(word));
      if (i >= other.granules_) break;
      set_bytes_locked(i << other.granularity_bits_, uint64_t{1} << other.granularity_bits_);
    }
  }
  return {};
}

bool DirtyBitmap::is_dirty(uint64_t offset, uint64_t length) const {
  std::lock_guard g(mu_);
  if (length == 0 || offset >= size_) return false;
  if (inconsistent_) return true;
  const uint64_t end = offset + std::min(length, size_ - offset);
  const uint64_t first = offset >> granularity_bits_;
  const uint64_t last = ((end - 1) >> granularity_bits_) + 1;
  return next_locked(first, last, true) < last;
}

std::vector<DirtyExtent> DirtyBitmap::extents(uint64_t offset, uint64_t length) const {
  std::vector<DirtyExtent> out;
  std::lock_guard g(mu_);
  if (length == 0 || offset >= size_) return out;
  const uint64_t end = offset + std::min(length, size_ - offset);
  if (inconsistent_) {
    out.push_back({end - offset, true});
    return out;
  }
  uint64_t pos = offset;
  while (pos < end) {
    const uint64_t gr = pos >> granularity_bits_;
    const bool dirty = test_locked(gr);
    const uint64_t last = ((end - 1) >> granularity_bits_) + 1;
    const uint64_t next = next_locked(gr, last, !dirty);
    const uint64_t stop = std::min(end, next << granularity_bits_);
    out.push_back({stop - pos, dirty});
    pos = stop;
  }
  return out;
}

uint64_t DirtyBitmap::dirty_bytes() const {
  std::lock_guard g(mu_);
  uint64_t bytes = count_ << granularity_bits_;
  if (count_ > 0 && test_locked(granules_ - 1))
    bytes -= (granules_ << granularity_bits_) - size_;  // the last granule ends past size_
  return bytes;
}

// ---------------------------------------------------------------- QEMU order

// Granule i is bit (i % 8) of byte (i / 8) (qcow2.txt "Bitmap data":
// bit_offset = byte * 8 + (byte_nr / granularity) % 8). On a little-endian
// host that is exactly the byte image of the 64-bit words; it is spelled
// out byte by byte so the format does not depend on the host.
void DirtyBitmap::serialize(uint64_t byte_offset, std::span<std::byte> out) const {
  std::lock_guard g(mu_);
  const uint64_t total = serialized_bytes();
  for (std::size_t i = 0; i < out.size(); ++i) {
    const uint64_t b = byte_offset + i;
    out[i] = b < total ? std::byte(words_[b >> 3] >> ((b & 7) * 8)) : std::byte{0};
  }
}

void DirtyBitmap::deserialize_or(uint64_t byte_offset, std::span<const std::byte> in) {
  std::lock_guard g(mu_);
  if (frozen_) return;
  const uint64_t total = serialized_bytes();
  for (std::size_t i = 0; i < in.size(); ++i) {
    const uint64_t b = byte_offset + i;
    if (b >= total) break;
    uint64_t v = uint64_t(in[i]);
    if (b == total - 1 && (granules_ & 7) != 0) v &= low_bits(unsigned(granules_ & 7));
    if (v == 0) continue;
    const uint64_t bits = v << ((b & 7) * 8);
    count_ += unsigned(std::popcount(bits & ~words_[b >> 3]));
    words_[b >> 3] |= bits;
  }
}

void DirtyBitmap::deserialize_ones(uint64_t byte_offset, uint64_t n) {
  std::lock_guard g(mu_);
  if (frozen_) return;
  set_range_locked(byte_offset * 8, (byte_offset + n) * 8);
}

bool DirtyBitmap::serialized_range_zero(uint64_t byte_offset, uint64_t n) const {
  std::lock_guard g(mu_);
  const uint64_t first = byte_offset * 8;
  const uint64_t end = std::min(granules_, (byte_offset + n) * 8);
  return first >= end || next_locked(first, end, true) == end;
}

}  // namespace fleece::cow
