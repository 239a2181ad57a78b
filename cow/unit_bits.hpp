// UnitBits: one bit per copy unit of a disk, stored in chunks that exist
// only where bits differ, with a bounded search for set or clear bits.
//
// Why not std::vector<bool> or boost::dynamic_bitset: a fleece of a 1 TiB
// disk in 4 KiB units has two bitmaps of 268 million bits. Flat, they are
// 64 MiB per fleece from its first moment, while a backup typically
// touches a small part of the disk; here a chunk of 32768 bits (4 KiB) is
// allocated only once its bits stop being all equal. And stopping a fleece
// or answering block status walks the bits in slices, needing "the first
// set bit in [from, to)" to cost at most O((to - from) / 64): uniform
// chunks are passed over whole, and dynamic_bitset's find_next() has no
// upper bound.
//
// Contract
//  * Not thread-safe: the owner locks (CbwFilter holds its mutex).
//  * Bits past size() do not exist; indexes must be < size(), ranges within
//    [0, size()].
//  * find(from, to) returns the first set bit c with from <= c < to, or to
//    if there is none; find_clear(from, to) the same for a clear bit.
//  * allocated_bytes() is the memory the bits take now.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace fleece::cow {

class UnitBits {
 public:
  static constexpr uint64_t kChunkBits = uint64_t{1} << 15;

  UnitBits() = default;
  UnitBits(uint64_t size, bool value) { assign(size, value); }

  void assign(uint64_t size, bool value);
  uint64_t size() const { return size_; }

  bool operator[](uint64_t i) const {
    const Chunk& ch = chunks_[i / kChunkBits];
    if (!ch.words) return ch.fill;
    return (ch.words[i % kChunkBits / 64] >> (i % 64)) & 1;
  }
  void set(uint64_t i);
  // Clears [first, end).
  void reset(uint64_t first, uint64_t end);

  uint64_t find(uint64_t from, uint64_t to) const;
  uint64_t find_clear(uint64_t from, uint64_t to) const;

  uint64_t allocated_bytes() const;

 private:
  static constexpr uint64_t kChunkWords = kChunkBits / 64;
  struct Chunk {
    std::unique_ptr<uint64_t[]> words;  // null: every bit equals fill
    bool fill = false;
  };

  uint64_t* materialize(Chunk& ch);
  template <bool Value>
  uint64_t find_value(uint64_t from, uint64_t to) const;

  uint64_t size_ = 0;
  std::vector<Chunk> chunks_;
};

}  // namespace fleece::cow
