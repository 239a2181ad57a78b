// UnitBits: one bit per copy unit of a disk, with a bounded search for set
// bits.
//
// Why not std::vector<bool> or boost::dynamic_bitset: stopping a fleece
// walks the set bits of the whole disk (268 million units for 1 TiB) in
// slices, and needs "the first set bit in [from, to)" to cost O((to -
// from) / 64). vector<bool> has no word access; dynamic_bitset's
// find_next() has no upper bound, so each slice would scan on to the next
// set bit, however far away.
//
// Contract
//  * Not thread-safe: the owner locks (CbwFilter holds its mutex).
//  * Bits past size() do not exist; indexes must be < size(), ranges within
//    [0, size()].
//  * find(from, to) returns the first set bit c with from <= c < to, or to
//    if there is none; find_clear(from, to) the same for a clear bit.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

namespace fleece::cow {

class UnitBits {
 public:
  UnitBits() = default;
  UnitBits(uint64_t size, bool value) { assign(size, value); }

  void assign(uint64_t size, bool value) {
    size_ = size;
    words_.assign((size + 63) / 64, value ? ~uint64_t{0} : 0);
    if (value && size % 64) words_.back() = (uint64_t{1} << (size % 64)) - 1;
  }

  uint64_t size() const { return size_; }
  bool operator[](uint64_t i) const { return (words_[i / 64] >> (i % 64)) & 1; }
  void set(uint64_t i) { words_[i / 64] |= uint64_t{1} << (i % 64); }
  void reset(uint64_t i) { words_[i / 64] &= ~(uint64_t{1} << (i % 64)); }

  // Clears [first, end).
  void reset(uint64_t first, uint64_t end) {
    for (uint64_t i = first; i < end;) {
      const uint64_t bit = i % 64, n = std::min<uint64_t>(64 - bit, end - i);
      const uint64_t mask = (n == 64 ? ~uint64_t{0} : ((uint64_t{1} << n) - 1)) << bit;
      words_[i / 64] &= ~mask;
      i += n;
    }
  }

  uint64_t find(uint64_t from, uint64_t to) const { return find_value<true>(from, to); }
  uint64_t find_clear(uint64_t from, uint64_t to) const { return find_value<false>(from, to); }

 private:
  // The first bit equal to Value in [from, to), or to.
  template <bool Value>
  uint64_t find_value(uint64_t from, uint64_t to) const {
    if (from >= to) return to;
    auto load = [this](uint64_t w) { return Value ? words_[w] : ~words_[w]; };
    uint64_t w = from / 64;
    uint64_t word = load(w) & (~uint64_t{0} << (from % 64));
    const uint64_t last = (to - 1) / 64;
    while (word == 0) {
      if (++w > last) return to;
      word = load(w);
    }
    const uint64_t c = w * 64 + static_cast<uint64_t>(std::countr_zero(word));
    return c < to ? c : to;
  }

  uint64_t size_ = 0;
  std::vector<uint64_t> words_;
};

}  // namespace fleece::cow
