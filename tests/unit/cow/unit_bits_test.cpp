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
  bits.reset(64);
  CHECK_FALSE(bits[64]);
  CHECK(bits.find(0, 1000) == 700);
}

TEST_CASE("UnitBits: set, reset of ranges, find and find_clear agree with a vector<bool> model") {
  std::mt19937_64 rng(7);
  const uint64_t size = 1000;
  UnitBits bits(size, false);
  std::vector<bool> model(size, false);
  for (int step = 0; step < 4000; ++step) {
    const uint64_t a = rng() % (size + 1), b = rng() % (size + 1);
    const uint64_t lo = std::min(a, b), hi = std::max(a, b);
    switch (rng() % 4) {
      case 0:
        if (lo < size) {
          bits.set(lo);
          model[lo] = true;
        }
        break;
      case 1:
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
