// DirtyBitmap: rounding, extents, merge, freeze, QEMU bit order.
#include "cow/dirty_bitmap.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

#include <fstream>
#include <random>
#include <set>
#include <vector>

using namespace fleece;
using namespace fleece::cow;

namespace {

std::shared_ptr<DirtyBitmap> make(uint64_t size, uint64_t gran, std::string name = "b") {
  auto r = DirtyBitmap::create(std::move(name), size, gran);
  REQUIRE(r.has_value());
  return *r;
}

}  // namespace

TEST_CASE("dirty bitmap: creation checks name and granularity") {
  CHECK(DirtyBitmap::create("", 1 << 20).has_error());
  CHECK(DirtyBitmap::create(std::string(1024, 'x'), 1 << 20).has_error());
  CHECK(DirtyBitmap::create("a", 1 << 20, 256).has_error());
  CHECK(DirtyBitmap::create("a", 1 << 20, 3 * 4096).has_error());
  CHECK(DirtyBitmap::create("a", 1 << 20, uint64_t{1} << 32).has_error());
  CHECK(DirtyBitmap::create("a", uint64_t{1} << 60, 512).error() ==
        std::make_error_code(std::errc::file_too_large));
  auto b = make(1 << 20, DirtyBitmap::kDefaultGranularity);
  CHECK(b->granularity() == 65536);
  CHECK(b->granules() == 16);
  CHECK(make(100000, 65536)->granules() == 2);
  CHECK(make(0, 65536)->granules() == 0);
  CHECK(DirtyBitmap::create("a", 1 << 20, uint64_t{1} << 31).has_value());
}

TEST_CASE("dirty bitmap: mark rounds outward, extents cover the range exactly") {
  const uint64_t g = 4096;
  auto b = make(10 * g + 100, g);  // the last granule is short
  b->mark(g + 1, 1);               // granule 1
  b->mark(3 * g - 1, 2);           // granules 2 and 3
  b->mark(10 * g + 50, 1000);      // past the end: clamped to the last granule
  CHECK(b->is_dirty(g, 1));
  CHECK(b->is_dirty(4 * g - 1, 1));
  CHECK_FALSE(b->is_dirty(4 * g, g));
  CHECK_FALSE(b->is_dirty(0, g));
  CHECK(b->dirty_bytes() == 3 * g + 100);
  using E = DirtyExtent;
  CHECK(b->extents(0, b->size()) ==
        std::vector<E>{{g, false}, {3 * g, true}, {6 * g, false}, {100, true}});
  // A query inside granules is cut at the query's edges, not the granules'.
  CHECK(b->extents(g + 10, 100) == std::vector<E>{{100, true}});
  CHECK(b->extents(500, 2 * g) == std::vector<E>{{g - 500, false}, {g + 500, true}});
  // Past the end is clamped; at or beyond the end is empty.
  CHECK(b->extents(10 * g, 1 << 20) == std::vector<E>{{100, true}});
  CHECK(b->extents(b->size(), 10).empty());
  CHECK(b->extents(0, 0).empty());
  // Zero-length marks do nothing.
  b->mark(7 * g, 0);
  CHECK_FALSE(b->is_dirty(7 * g, g));
}

TEST_CASE("dirty bitmap: extents match a per-granule model on random marks") {
  std::mt19937_64 rng(11);
  for (uint64_t g : {512ull, 4096ull, 65536ull}) {
    const uint64_t size = g * 300 + 17;
    auto b = make(size, g);
    std::vector<bool> model((size + g - 1) / g);
    for (int i = 0; i < 40; ++i) {
      const uint64_t off = rng() % size, len = 1 + rng() % (g * 20);
      b->mark(off, len);
      const uint64_t end = std::min(size, off + len);
      for (uint64_t k = off / g; k <= (end - 1) / g; ++k) model[k] = true;
    }
    for (int q = 0; q < 50; ++q) {
      const uint64_t off = rng() % size, len = 1 + rng() % size;
      auto ex = b->extents(off, len);
      uint64_t pos = off;
      bool prev_set = false, prev = false;
      for (auto& e : ex) {
        REQUIRE(e.length > 0);
        if (prev_set) CHECK(e.dirty != prev);  // runs are maximal
        for (uint64_t p = pos; p < pos + e.length; p += 1 + (pos + e.length - p - 1) / 2)
          CHECK(model[p / g] == e.dirty);
        CHECK(model[(pos + e.length - 1) / g] == e.dirty);
        pos += e.length;
        prev = e.dirty;
        prev_set = true;
      }
      CHECK(pos == std::min(size, off + len));
    }
    uint64_t count = 0;
    for (uint64_t k = 0; k < model.size(); ++k)
      if (model[k]) count += std::min(g, size - k * g);
    CHECK(b->dirty_bytes() == count);
  }
}

TEST_CASE("dirty bitmap: enabled, frozen, inconsistent") {
  auto b = make(1 << 20, 65536);
  b->set_enabled(false);
  b->mark(0, 1);
  CHECK_FALSE(b->is_dirty(0, 1 << 20));
  CHECK(!b->set_dirty(0, 1));  // management works on a disabled bitmap
  CHECK(b->is_dirty(0, 1));
  b->set_enabled(true);
  b->mark(65536 * 3, 1);
  auto f = b->frozen_copy();
  CHECK(f->frozen());
  CHECK_FALSE(f->enabled());
  CHECK(f->name() == "b");
  b->mark(65536 * 5, 1);
  CHECK(f->dirty_bytes() == 2 * 65536);
  f->mark(65536 * 7, 1);
  CHECK(f->clear() == std::make_error_code(std::errc::operation_not_permitted));
  CHECK(f->merge_from(*b) == std::make_error_code(std::errc::operation_not_permitted));
  CHECK(f->dirty_bytes() == 2 * 65536);
  CHECK(!b->clear());
  CHECK(b->dirty_bytes() == 0);

  auto i = make(1 << 20, 65536);
  i->set_inconsistent();
  CHECK_FALSE(i->enabled());
  i->set_enabled(true);
  CHECK_FALSE(i->enabled());
  CHECK(i->is_dirty(0, 1));  // never trusted: reads as all dirty
  CHECK(i->extents(0, 1 << 20) == std::vector<DirtyExtent>{{1 << 20, true}});
  CHECK(b->merge_from(*i) == std::make_error_code(std::errc::operation_not_permitted));
}

TEST_CASE("dirty bitmap: merge across equal and different granularities") {
  auto a = make(1 << 20, 4096, "a");
  auto c = make(1 << 20, 65536, "c");
  a->mark(5000, 10);  // granule 1 of a: [4096, 8192)
  c->mark(200000, 1); // granule 3 of c: [196608, 262144)
  auto a2 = make(1 << 20, 4096, "a2");
  a2->mark(0, 1);
  CHECK(!a->merge_from(*a2));
  CHECK(a->dirty_bytes() == 2 * 4096);
  CHECK(!a->merge_from(*c));
  CHECK(a->dirty_bytes() == 2 * 4096 + 65536);
  CHECK(a->is_dirty(196608, 1));
  CHECK(a->is_dirty(262143, 1));
  CHECK_FALSE(a->is_dirty(262144, 1));
  CHECK(!c->merge_from(*a));  // coarser: granule 0 and 3 of c
  CHECK(c->dirty_bytes() == 2 * 65536);
  auto other_size = make(2 << 20, 4096);
  CHECK(a->merge_from(*other_size) == std::make_error_code(std::errc::invalid_argument));
}

TEST_CASE("dirty bitmap: merging a finer bitmap marks every coarse granule it touches") {
  // Several words of source bits, sparse and dense, end granule included.
  const uint64_t size = 64 << 20;
  auto fine = make(size, 4096, "fine");
  auto coarse = make(size, 65536, "coarse");
  std::mt19937_64 rng(11);
  std::vector<bool> want(size / 65536, false);
  for (int i = 0; i < 300; ++i) {
    const uint64_t at = rng() % size;
    fine->mark(at, 1);
    want[at / 65536] = true;
  }
  fine->mark(size - 1, 1);
  want.back() = true;
  REQUIRE(!coarse->merge_from(*fine));
  uint64_t dirty = 0;
  for (uint64_t g = 0; g < want.size(); ++g) {
    CHECK(coarse->is_dirty(g * 65536, 65536) == want[g]);
    dirty += want[g] ? 65536 : 0;
  }
  CHECK(coarse->dirty_bytes() == dirty);
}

namespace {
uint64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * uint64_t(sysconf(_SC_PAGESIZE));
}
}  // namespace

TEST_CASE("dirty bitmap: a fresh or cleared bitmap of 1 TiB takes memory only where written") {
  const uint64_t limit = resident_bytes() + (8u << 20);  // a flat bitmap would add 32 MiB
  auto b = make(uint64_t{1} << 40, 4096, "big");
  CHECK(resident_bytes() < limit);
  CHECK_FALSE(b->is_dirty(0, uint64_t{1} << 40));
  b->mark(uint64_t{1} << 39, 4096);
  CHECK(b->dirty_bytes() == 4096);
  REQUIRE(!b->clear());
  CHECK(b->dirty_bytes() == 0);
  CHECK_FALSE(b->is_dirty(0, uint64_t{1} << 40));
  CHECK(resident_bytes() < limit);
}

TEST_CASE("dirty bitmap: QEMU bit order, least significant bit first") {
  auto b = make(512 * 20, 512);  // 20 granules: 3 bytes, 4 tail bits
  b->mark(0, 1);                 // bit 0 of byte 0
  b->mark(512 * 9, 1);           // bit 1 of byte 1
  b->mark(512 * 19, 1);          // bit 3 of byte 2
  CHECK(b->serialized_bytes() == 3);
  std::vector<std::byte> out(5, std::byte{0xee});
  b->serialize(0, out);
  CHECK(out == std::vector<std::byte>{std::byte{0x01}, std::byte{0x02}, std::byte{0x08},
                                      std::byte{0}, std::byte{0}});
  CHECK_FALSE(b->serialized_range_zero(0, 3));
  CHECK(b->serialized_range_zero(3, 100));

  auto r = make(512 * 20, 512);
  const std::byte in[] = {std::byte{0x80}, std::byte{0}, std::byte{0xff}};  // tail bits ignored
  r->deserialize_or(0, in);
  CHECK(r->dirty_bytes() == 5 * 512);
  CHECK(r->is_dirty(512 * 7, 1));
  CHECK(r->is_dirty(512 * 16, 512 * 4));
  CHECK_FALSE(r->is_dirty(0, 512 * 7));
  r->deserialize_ones(1, 1);
  CHECK(r->dirty_bytes() == 13 * 512);
  // A big random round trip through the byte image.
  std::mt19937_64 rng(3);
  auto big = make(uint64_t{1} << 30, 65536);
  for (int i = 0; i < 500; ++i) big->mark(rng() % big->size(), 1 + rng() % 300000);
  std::vector<std::byte> img(big->serialized_bytes());
  big->serialize(0, img);
  auto back = make(uint64_t{1} << 30, 65536);
  back->deserialize_or(0, std::span(img).first(100));
  back->deserialize_or(100, std::span(img).subspan(100));
  CHECK(back->dirty_bytes() == big->dirty_bytes());
  CHECK(back->extents(0, back->size()) == big->extents(0, big->size()));
}
