// BitmapSidecar: round trip, in_use crash semantics, hostile files.
#include "cow/bitmap_sidecar.hpp"
#include "tests/unit/cow/qcow2_test_support.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <random>

using namespace fleece;
using namespace fleece::cow;
using namespace fleece::cow::test;

namespace {

std::unique_ptr<BitmapSidecar> open_sc(const std::string& path, uint64_t size, bool writable,
                                       std::string* why = nullptr) {
  auto r = run(BitmapSidecar::open(path, size, writable, why));
  return r ? std::move(*r) : nullptr;
}

std::shared_ptr<DirtyBitmap> by_name(const BitmapSidecar& sc, const std::string& n) {
  for (auto& b : sc.loaded())
    if (b->name() == n) return b;
  return nullptr;
}

}  // namespace

TEST_CASE("bitmap sidecar: round trip, in_use on writable open, inconsistent after a crash") {
  TempDir dir;
  const std::string path = BitmapSidecar::path_for(dir.file("disk.raw"));
  CHECK(path == dir.file("disk.raw.fleece-bitmaps"));
  const uint64_t size = (64 << 20) + 4096;
  std::shared_ptr<DirtyBitmap> a, b;
  {
    auto sc = open_sc(path, size, true);
    REQUIRE(sc);
    CHECK(sc->loaded().empty());
    CHECK_FALSE(std::filesystem::exists(path));  // nothing to mark yet
    a = *DirtyBitmap::create("a", size);
    b = *DirtyBitmap::create("b", size, 4096);
    auto tmp = *DirtyBitmap::create("t", size);
    a->set_persistent(true);
    b->set_persistent(true);
    a->mark(1 << 20, 100);
    a->mark(size - 1, 1);
    b->mark(0, 3 * 4096);
    b->set_enabled(false);
    std::vector<std::shared_ptr<DirtyBitmap>> all{a, b, tmp};
    REQUIRE(!run(sc->store(all)));
  }
  CHECK(std::filesystem::exists(path));
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
  {
    auto sc = open_sc(path, size, false);
    REQUIRE(sc);
    REQUIRE(sc->loaded().size() == 2);
    auto la = by_name(*sc, "a"), lb = by_name(*sc, "b");
    REQUIRE(la);
    REQUIRE(lb);
    CHECK(la->extents(0, size) == a->extents(0, size));
    CHECK(lb->extents(0, size) == b->extents(0, size));
    CHECK(la->enabled());
    CHECK_FALSE(lb->enabled());
    CHECK(lb->granularity() == 4096);
    CHECK_FALSE(la->inconsistent());
    CHECK(run(sc->store({})) == std::make_error_code(std::errc::read_only_file_system));
  }
  // A writable open marks them in use; without a store (a crash) they come
  // back inconsistent.
  {
    auto sc = open_sc(path, size, true);
    REQUIRE(sc);
    CHECK_FALSE(by_name(*sc, "a")->inconsistent());
    uint64_t recorded = 0;
    auto entries = BitmapSidecar::parse(read_file(path), &recorded, nullptr);
    REQUIRE(entries.has_value());
    for (auto& e : *entries) CHECK((e.flags & BitmapSidecar::kInUse) != 0);
  }
  {
    auto sc = open_sc(path, size, true);
    REQUIRE(sc);
    auto la = by_name(*sc, "a");
    CHECK(la->inconsistent());
    CHECK(la->is_dirty(5 << 20, 1));
    // Stored again it stays in use until removed.
    auto all = sc->loaded();
    REQUIRE(!run(sc->store(all)));
    REQUIRE(!run(sc->remove("b")));
    CHECK(run(sc->remove("b")) == std::make_error_code(std::errc::no_such_file_or_directory));
  }
  {
    auto sc = open_sc(path, size, false);
    REQUIRE(sc);
    REQUIRE(sc->loaded().size() == 1);
    CHECK(by_name(*sc, "a")->inconsistent());
  }
  // A disk that changed size: every bitmap is inconsistent.
  {
    auto sc = open_sc(path, size * 2, false);
    REQUIRE(sc);
    CHECK(by_name(*sc, "a")->inconsistent());
  }
}

TEST_CASE("bitmap sidecar: damaged files are refused with a reason and moved aside") {
  TempDir dir;
  const std::string path = dir.file("d.fleece-bitmaps");
  const uint64_t size = 1 << 20;
  auto a = *DirtyBitmap::create("a", size, 4096);
  a->mark(8192, 1);
  std::vector<BitmapSidecar::Entry> entries(1);
  entries[0].name = "a";
  entries[0].granularity_bits = 12;
  entries[0].flags = BitmapSidecar::kEnabled;
  entries[0].data.resize(a->serialized_bytes());
  a->serialize(0, entries[0].data);
  const auto good = BitmapSidecar::encode(size, entries);
  uint64_t recorded = 0;
  REQUIRE(BitmapSidecar::parse(good, &recorded, nullptr).has_value());
  CHECK(recorded == size);

  auto refused = [&](std::vector<std::byte> bytes, const std::string& says) {
    write_file(path, bytes);
    std::string why;
    CHECK_FALSE(open_sc(path, size, false, &why));
    INFO(why);
    CHECK(why.find(says) != std::string::npos);
  };
  refused(std::vector<std::byte>(good.begin(), good.end() - 9), "checksum");
  refused(std::vector<std::byte>(10, std::byte{0}), "magic");
  auto flipped = good;
  flipped[40] ^= std::byte{1};
  refused(flipped, "checksum");
  // Fields checked even with a matching checksum (a buggy writer).
  auto reencode = [&](auto edit) {
    auto e = entries;
    edit(e);
    return BitmapSidecar::encode(size, e);
  };
  refused(reencode([](auto& e) { e[0].granularity_bits = 40; }), "invalid fields");
  refused(reencode([](auto& e) { e[0].data.pop_back(); }), "data bytes");
  refused(reencode([](auto& e) { e.push_back(e[0]); }), "twice");
  refused(reencode([](auto& e) { e[0].flags |= 0x80; }), "invalid fields");

  // Random damage: never a crash, always a reason.
  std::mt19937 rng(9);
  for (int i = 0; i < 300; ++i) {
    auto bytes = good;
    bytes[rng() % bytes.size()] = std::byte(rng());
    if (rng() % 4 == 0) bytes.resize(rng() % bytes.size());
    std::string why;
    auto r = BitmapSidecar::parse(bytes, &recorded, &why);
    if (!r) CHECK(!why.empty());
  }

  // A writable open moves the bad file aside, so it is never trusted.
  write_file(path, flipped);
  std::string why;
  CHECK_FALSE(open_sc(path, size, true, &why));
  CHECK(why.find("moved aside") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK(std::filesystem::exists(path + ".bad"));
  auto sc = open_sc(path, size, true);
  REQUIRE(sc);
  CHECK(sc->loaded().empty());
}
