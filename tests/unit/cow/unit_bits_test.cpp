#include "cow/unit_bits.hpp"

#include <doctest/doctest.h>

#include <random>
#include <vector>

using fleece::cow::UnitBits;

namespace {
// The first bit of `model` equal to `value` in [from, to), or to.
uint64_t model_find(const std::vector<bool>& model, uint64_t from, uint64_t to, bool value = true) {
  for (uint64_t c = from; c < to; ++c)
    if (model[c] == value) return c;
  return to;
}
}  // namespace

TEST_CASE("UnitBits: assign sets exactly size() bits, none past the end") {
  for (uint64_t size : {0, 1, 63, 64, 65, 200}) {
    UnitBits all(size, true);
    CHECK(all.size() == size);
    CHECK(all.find(0, size) == (size ? 0 : size));
    for (uint64_t c = 0; c < size; ++c) CHECK(all[c]);
    CHECK(all.find_clear(0, size) == size);  // the unused tail of the last word is not found
    UnitBits none(size, false);
    CHECK(none.find(0, size) == size);
    CHECK(none.find_clear(0, size) == (size ? 0 : size));
    if (size) {
      all.reset(0, size);
      CHECK(all.find(0, size) == size);
    }
  }
}

TEST_CASE("UnitBits: find stops at its bound, whatever lies beyond") {
  UnitBits bits(1000, false);
  bits.set(700);
  CHECK(bits.find(0, 700) == 700);  // not found: returns the bound
  CHECK(bits.find(0, 701) == 700);
  CHECK(bits.find(700, 701) == 700);
  CHECK(bits.find(701, 1000) == 1000);
  CHECK(bits.find(5, 5) == 5);
  bits.set(64);
  CHECK(bits.find(0, 1000) == 64);
  CHECK(bits.find(65, 1000) == 700);
  bits.reset(64, 65);
  CHECK_FALSE(bits[64]);
  CHECK(bits.find(0, 1000) == 700);
}

namespace {
// Random single-bit and range operations on UnitBits and a vector<bool>,
// with ranges of every scale and ends at or just below chunk edges; every
// find and find_clear must agree, and every bit at the end.
void against_model(uint64_t size, bool start, uint64_t seed) {
  const uint64_t K = UnitBits::kChunkBits;
  std::mt19937_64 rng(seed);
  UnitBits bits(size, start);
  std::vector<bool> model(size, start);
  auto pick = [&]() -> uint64_t {
    switch (rng() % 3) {
      case 0: return rng() % (size + 1);
      case 1: return std::min(size, (rng() % 4) * K + rng() % 3);  // at an edge
      default: return std::min(size, (rng() % 4 + 1) * K - rng() % 3);  // just below one
    }
  };
  for (int step = 0; step < 3000; ++step) {
    const uint64_t a = pick(), b = pick();
    const uint64_t lo = std::min(a, b), hi = std::max(a, b);
    switch (rng() % 5) {
      case 0:
        if (lo < size) {
          bits.set(lo);
          model[lo] = true;
        }
        break;
      case 1:
        if (lo < size) {
          bits.reset(lo, lo + 1);  // one bit
          model[lo] = false;
        }
        break;
      case 2:
        bits.reset(lo, hi);
        for (uint64_t c = lo; c < hi; ++c) model[c] = false;
        break;
      default:
        REQUIRE(bits.find(lo, hi) == model_find(model, lo, hi));
        REQUIRE(bits.find_clear(lo, hi) == model_find(model, lo, hi, false));
    }
  }
  for (uint64_t c = 0; c < size; ++c) REQUIRE(bits[c] == model[c]);
}
}  // namespace

TEST_CASE("UnitBits: set, reset of ranges, find and find_clear agree with a vector<bool> model") {
  for (bool start : {false, true}) {
    CAPTURE(start);
    against_model(1000, start, 7);                             // inside one chunk
    against_model(3 * UnitBits::kChunkBits + 1000, start, 5);  // three chunks and a part
  }
}

TEST_CASE("UnitBits: memory follows what differs, not the size") {
  const uint64_t units = uint64_t{1} << 28;  // 1 TiB in 4 KiB units
  UnitBits needs(units, true), holds(units, false);
  CHECK(needs.allocated_bytes() < 256 * 1024);
  CHECK(holds.allocated_bytes() < 256 * 1024);
  const uint64_t base = holds.allocated_bytes();
  for (uint64_t c = 1000; c < 1000 + 65536; ++c) holds.set(c);  // 256 MiB copied
  CHECK(holds.allocated_bytes() == base + 3 * 4096);
  CHECK(holds.find(0, units) == 1000);
  CHECK(holds.find(1000 + 65536, units) == units);
  needs.reset(0, units);  // a stop: every chunk back to uniform
  CHECK(needs.allocated_bytes() == base);
  CHECK(needs.find(0, units) == units);
}
