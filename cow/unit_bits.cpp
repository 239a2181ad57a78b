#include "cow/unit_bits.hpp"

#include <algorithm>
#include <bit>

namespace fleece::cow {

void UnitBits::assign(uint64_t size, bool value) {
  size_ = size;
  chunks_.clear();
  chunks_.resize((size + kChunkBits - 1) / kChunkBits);
  for (Chunk& ch : chunks_) ch.fill = value;
}

uint64_t* UnitBits::materialize(Chunk& ch) {
  if (!ch.words) {
    ch.words = std::make_unique_for_overwrite<uint64_t[]>(kChunkWords);
    std::fill_n(ch.words.get(), kChunkWords, ch.fill ? ~uint64_t{0} : 0);
  }
  return ch.words.get();
}

void UnitBits::set(uint64_t i) {
  Chunk& ch = chunks_[i / kChunkBits];
  if (!ch.words && ch.fill) return;
  materialize(ch)[i % kChunkBits / 64] |= uint64_t{1} << (i % 64);
}

void UnitBits::reset(uint64_t first, uint64_t end) {
  while (first < end) {
    const uint64_t ci = first / kChunkBits;
    const uint64_t chunk_start = ci * kChunkBits;
    const uint64_t stop = std::min(end, chunk_start + kChunkBits);
    Chunk& ch = chunks_[ci];
    if (first == chunk_start && stop == std::min(size_, chunk_start + kChunkBits)) {
      ch.words.reset();  // the whole chunk
      ch.fill = false;
    } else if (ch.words || ch.fill) {
      uint64_t* words = materialize(ch);
      for (uint64_t i = first; i < stop;) {
        const uint64_t bit = i % 64, n = std::min<uint64_t>(64 - bit, stop - i);
        const uint64_t mask = (n == 64 ? ~uint64_t{0} : ((uint64_t{1} << n) - 1)) << bit;
        words[i % kChunkBits / 64] &= ~mask;
        i += n;
      }
    }
    first = stop;
  }
}

template <bool Value>
uint64_t UnitBits::find_value(uint64_t from, uint64_t to) const {
  while (from < to) {
    const uint64_t ci = from / kChunkBits;
    const uint64_t stop = std::min(to, (ci + 1) * kChunkBits);
    const Chunk& ch = chunks_[ci];
    if (!ch.words) {
      if (ch.fill == Value) return from;
      from = stop;
      continue;
    }
    auto load = [&ch](uint64_t w) { return Value ? ch.words[w] : ~ch.words[w]; };
    uint64_t w = from % kChunkBits / 64;
    const uint64_t last = (stop - 1) % kChunkBits / 64;
    uint64_t word = load(w) & (~uint64_t{0} << (from % 64));
    while (word == 0 && w < last) word = load(++w);
    if (word != 0) {
      const uint64_t c = ci * kChunkBits + w * 64 + static_cast<uint64_t>(std::countr_zero(word));
      if (c < stop) return c;
    }
    from = stop;
  }
  return to;
}

uint64_t UnitBits::find(uint64_t from, uint64_t to) const { return find_value<true>(from, to); }

uint64_t UnitBits::find_clear(uint64_t from, uint64_t to) const {
  return find_value<false>(from, to);
}

uint64_t UnitBits::allocated_bytes() const {
  uint64_t n = chunks_.capacity() * sizeof(Chunk);
  for (const Chunk& ch : chunks_)
    if (ch.words) n += kChunkWords * sizeof(uint64_t);
  return n;
}

}  // namespace fleece::cow
