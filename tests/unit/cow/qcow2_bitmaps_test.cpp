// Qcow2BitmapStore against QEMU: bitmaps qemu-img/qemu-io write load in
// fleece; bitmaps fleece writes are listed by qemu-img info, pass qemu-img
// check, survive qemu-img bitmap --merge and convert --bitmaps, and read
// back through qemu-storage-daemon's qemu:dirty-bitmap NBD context. Crash
// semantics (in_use) and hostile directories.
#include "cow/bitmap_filter.hpp"
#include "cow/qcow2_bitmaps.hpp"
#include "cow/qcow2_format.hpp"
#include "tests/unit/cow/qcow2_test_support.hpp"

#include <doctest/doctest.h>

#include <fmt/format.h>

#include <sstream>

using namespace fleece;
using namespace fleece::cow;
using namespace fleece::cow::test;

namespace {

struct Opened {
  std::shared_ptr<GrowingFile> file;
  std::shared_ptr<Qcow2Image> image;
  std::unique_ptr<Qcow2BitmapStore> store;
  std::string why;
};

Opened open_path(const std::string& path, bool writable) {
  Opened o;
  o.file = std::make_shared<GrowingFile>(read_file(path));
  auto img = run(Qcow2Image::open(o.file, {.read_only = !writable, .keep_bitmaps = true}));
  REQUIRE(img.has_value());
  o.image = *img;
  auto st = run(Qcow2BitmapStore::open(o.image, &o.why));
  if (st) o.store = std::move(*st);
  return o;
}

std::shared_ptr<DirtyBitmap> find(const Qcow2BitmapStore& st, const std::string& name) {
  for (auto& b : st.loaded())
    if (b->name() == name) return b;
  return nullptr;
}

std::shared_ptr<DirtyBitmap> make(uint64_t size, uint64_t gran, const std::string& name) {
  auto r = DirtyBitmap::create(name, size, gran);
  REQUIRE(r.has_value());
  (*r)->set_persistent(true);
  return *r;
}

void check_clean(const std::string& path) {
  auto [rc, out] = shell("qemu-img check -f qcow2 '" + path + "'");
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("No errors were found") != std::string::npos);
  CHECK(out.find("leaked") == std::string::npos);
}

// "name granularity flag,flag" per bitmap, from qemu-img info's JSON.
std::string qemu_bitmaps(const std::string& path) {
  auto [rc, out] = shell(
      "qemu-img info -f qcow2 --output=json '" + path +
      "' | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin)"
      "[\"format-specific\"][\"data\"]; print(\";\".join(\"%s %d %s\" % (b[\"name\"], "
      "b[\"granularity\"], \",\".join(b[\"flags\"])) for b in d.get(\"bitmaps\", [])))'");
  INFO(out);
  CHECK(rc == 0);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// The bitmap as QEMU reads it: qemu-storage-daemon exports the image with
// the bitmap, nbdinfo maps the qemu:dirty-bitmap context.
std::vector<DirtyExtent> qemu_map(const TempDir& dir, const std::string& path,
                                  const std::string& bitmap) {
  const std::string sock = dir.file("qsd.sock"), pid = dir.file("qsd.pid");
  auto [rc, out] = shell(fmt::format(
      "timeout 20 qemu-storage-daemon --daemonize --pidfile '{}' "
      "--blockdev driver=file,filename='{}',node-name=f,read-only=on "
      "--blockdev driver=qcow2,file=f,node-name=q,read-only=on "
      "--nbd-server addr.type=unix,addr.path='{}' "
      "--export type=nbd,id=e,node-name=q,name=x,bitmaps.0='{}'",
      pid, path, sock, bitmap));
  INFO(out);
  REQUIRE(rc == 0);
  auto [mrc, map] = shell(fmt::format(
      "timeout 10 nbdinfo --map=qemu:dirty-bitmap:{} 'nbd+unix:///x?socket={}'", bitmap, sock));
  shell(fmt::format("kill $(cat '{}')", pid));
  INFO(map);
  CHECK(mrc == 0);
  std::vector<DirtyExtent> ex;
  std::istringstream in(map);
  uint64_t off, len;
  unsigned type;
  std::string desc;
  while (in >> off >> len >> type >> desc) ex.push_back({len, (type & 1) != 0});
  return ex;
}

// An empty qcow2 made by qemu-img.
std::string qemu_create(const TempDir& dir, const std::string& name, uint64_t size) {
  const std::string path = dir.file(name);
  REQUIRE(shell(fmt::format("qemu-img create -q -f qcow2 '{}' {}", path, size)).first == 0);
  return path;
}

// A 4 MiB qcow2 with the named bitmaps (made by qemu-img), written at
// [0, 4k) by qemu-io so they are dirty there.
std::string qemu_with_bitmaps(const TempDir& dir, const std::string& name,
                              const std::vector<std::string>& bitmaps) {
  const std::string path = qemu_create(dir, name, 4 << 20);
  std::string cmd = "true";
  for (auto& b : bitmaps) cmd += fmt::format(" && qemu-img bitmap --add '{}' {}", path, b);
  cmd += fmt::format(" && qemu-io -c 'write 0 4k' '{}'", path);
  auto [rc, out] = shell(cmd);
  INFO(out);
  REQUIRE(rc == 0);
  return path;
}

uint64_t find_ext_dir(const std::string& path) {
  auto f = std::make_shared<GrowingFile>(read_file(path));
  auto img = run(Qcow2Image::open(f, {.read_only = true}));
  REQUIRE(img.has_value());
  auto h = (*img)->header();
  REQUIRE(h.has_bitmaps_extension);
  return h.bitmaps.directory_offset;
}

}  // namespace

TEST_CASE("qcow2 bitmaps: fleece loads what qemu-img bitmap and qemu-io wrote") {
  TempDir dir;
  const std::string img = dir.file("q.qcow2");
  auto [rc, out] = shell(fmt::format(
      "qemu-img create -q -f qcow2 '{0}' 4M && qemu-img bitmap --add '{0}' b0 && "
      "qemu-img bitmap --add -g 4096 '{0}' b1 && qemu-img bitmap --add '{0}' b2 && "
      "qemu-img bitmap --disable '{0}' b2 && "
      "qemu-io -c 'write -P 0xaa 1M 64k' -c 'write 3M 4k' '{0}'",
      img));
  INFO(out);
  REQUIRE(rc == 0);
  for (bool writable : {false, true}) {
    CAPTURE(writable);
    auto o = open_path(img, writable);
    INFO(o.why);
    REQUIRE(o.store);
    REQUIRE(o.store->loaded().size() == 3);
    auto b0 = find(*o.store, "b0"), b1 = find(*o.store, "b1"), b2 = find(*o.store, "b2");
    REQUIRE(b0);
    REQUIRE(b1);
    REQUIRE(b2);
    CHECK(b0->granularity() == 65536);
    CHECK(b1->granularity() == 4096);
    CHECK(b0->enabled());
    CHECK_FALSE(b2->enabled());
    CHECK_FALSE(b0->inconsistent());
    CHECK(b0->persistent());
    using E = DirtyExtent;
    CHECK(b0->extents(0, 4 << 20) ==
          std::vector<E>{{1 << 20, false}, {65536, true}, {2031616, false}, {65536, true},
                         {983040, false}});
    CHECK(b1->extents(0, 4 << 20) ==
          std::vector<E>{{1 << 20, false}, {65536, true}, {2031616, false}, {4096, true},
                         {1044480, false}});
    CHECK(b2->dirty_bytes() == 0);
    if (writable) {
      // Open for writing marks them in use on disk.
      const std::string p = dir.file("w.qcow2");
      write_file(p, o.file->bytes());
      CHECK(qemu_bitmaps(p) == "b0 65536 in-use,auto;b1 4096 in-use,auto;b2 65536 in-use");
      check_clean(p);
    }
  }
}

TEST_CASE("qcow2 bitmaps: what fleece writes, QEMU lists, checks, merges, converts and maps") {
  TempDir dir;
  const uint64_t size = 16 << 20;
  const std::string img = qemu_create(dir, "f.qcow2", size);
  {
    auto o = open_path(img, true);
    REQUIRE(o.store);
    CHECK(o.store->loaded().empty());
    // Data and bitmaps side by side: guest writes through a BitmapFilter.
    auto filter = std::make_shared<BitmapFilter>(o.image);
    auto b1 = make(size, 65536, "b1");
    auto b2 = make(size, 4096, "b2");
    auto tmp = make(size, 65536, "not-persistent");
    tmp->set_persistent(false);
    REQUIRE(!filter->attach(b1));
    REQUIRE(!filter->attach(b2));
    REQUIRE(!filter->attach(tmp));
    auto guest = [&]() -> block::Task<void> {
      auto data = pattern(10000, 1);
      CHECK(!co_await filter->write(3 << 20, data, {}));
      CHECK(!co_await filter->write_zeroes(9 << 20, 70000, {}));
      b2->set_enabled(false);
      CHECK(!co_await filter->write(15 << 20, data, {}));
    };
    run(guest());
    auto all = filter->bitmaps();
    REQUIRE(!run(o.store->store(all)));
    write_file(img, o.file->bytes());
  }
  check_clean(img);
  CHECK(qemu_bitmaps(img) == "b1 65536 auto;b2 4096 ");
  auto o = open_path(img, false);
  REQUIRE(o.store);
  auto b1 = find(*o.store, "b1"), b2 = find(*o.store, "b2");
  REQUIRE(b1);
  REQUIRE(b2);
  CHECK(b1->dirty_bytes() == 65536 + 2 * 65536 + 65536);
  CHECK(b2->dirty_bytes() == 3 * 4096 + 18 * 4096);
  CHECK(qemu_map(dir, img, "b1") == b1->extents(0, size));
  CHECK(qemu_map(dir, img, "b2") == b2->extents(0, size));

  // QEMU merges fleece's bitmap into its own, and carries both in a convert.
  auto [rc, out] = shell(fmt::format(
      "qemu-img bitmap --add '{0}' b3 && qemu-img bitmap --merge b1 '{0}' b3 && "
      "qemu-img bitmap --merge b2 '{0}' b3 && "
      "qemu-img convert --bitmaps -O qcow2 '{0}' '{1}'",
      img, dir.file("c.qcow2")));
  INFO(out);
  REQUIRE(rc == 0);
  check_clean(img);
  for (auto path : {img, dir.file("c.qcow2")}) {
    CAPTURE(path);
    auto m = open_path(path, false);
    REQUIRE(m.store);
    auto b3 = find(*m.store, "b3");
    REQUIRE(b3);
    auto want = make(size, 65536, "w");
    REQUIRE(!want->merge_from(*b1));
    REQUIRE(!want->merge_from(*b2));
    CHECK(b3->extents(0, size) == want->extents(0, size));
    auto c1 = find(*m.store, "b1");
    REQUIRE(c1);
    CHECK(c1->extents(0, size) == b1->extents(0, size));
  }
}

TEST_CASE("qcow2 bitmaps: a bitmap in use at a crash loads inconsistent; remove frees it") {
  TempDir dir;
  const uint64_t size = 8 << 20;
  const std::string img = qemu_create(dir, "c.qcow2", size);
  {
    auto o = open_path(img, true);
    REQUIRE(o.store);
    auto a = make(size, 65536, "a"), b = make(size, 65536, "b");
    a->mark(0, 1 << 20);
    b->mark(5 << 20, 1);
    std::vector<std::shared_ptr<DirtyBitmap>> all{a, b};
    REQUIRE(!run(o.store->store(all)));
    write_file(img, o.file->bytes());
  }
  // Opened for writing, then "crashed": nothing stored.
  {
    auto o = open_path(img, true);
    REQUIRE(o.store);
    CHECK_FALSE(find(*o.store, "a")->inconsistent());
    write_file(img, o.file->bytes());
  }
  CHECK(qemu_bitmaps(img) == "a 65536 in-use,auto;b 65536 in-use,auto");
  check_clean(img);
  {
    auto o = open_path(img, true);
    REQUIRE(o.store);
    auto a = find(*o.store, "a"), b = find(*o.store, "b");
    REQUIRE(a);
    CHECK(a->inconsistent());
    CHECK(b->inconsistent());
    CHECK_FALSE(a->enabled());
    CHECK(a->is_dirty(7 << 20, 1));  // never trusted
    // A clean store keeps it in use (inconsistent until removed); a fresh
    // bitmap of the same disk stores fine beside it.
    auto c = make(size, 65536, "c");
    c->mark(2 << 20, 1);
    std::vector<std::shared_ptr<DirtyBitmap>> all{a, b, c};
    REQUIRE(!run(o.store->store(all)));
    CHECK(run(o.store->remove("nope")) == std::make_error_code(std::errc::no_such_file_or_directory));
    REQUIRE(!run(o.store->remove("b")));
    write_file(img, o.file->bytes());
  }
  CHECK(qemu_bitmaps(img) == "a 65536 in-use;c 65536 auto");
  check_clean(img);
  {
    auto o = open_path(img, true);
    REQUIRE(o.store);
    REQUIRE(!run(o.store->remove("a")));
    REQUIRE(!run(o.store->remove("c")));
    write_file(img, o.file->bytes());
  }
  CHECK(qemu_bitmaps(img) == "");
  check_clean(img);
  auto [rc, info] = shell("qemu-img info '" + img + "'");
  CHECK(info.find("bitmaps") == std::string::npos);
}

TEST_CASE("qcow2 bitmaps: all-ones table entries, and bitmaps a non-bitmap writer made stale") {
  TempDir dir;
  const std::string img = qemu_with_bitmaps(dir, "o.qcow2", {"b0"});
  {
    // Make the single table entry "unallocated, all ones" (bit 0).
    auto bytes = read_file(img);
    const uint64_t d = find_ext_dir(img);
    const uint64_t table = qcow2::load_be64(bytes.data() + d);
    qcow2::store_be64(bytes.data() + table, qcow2::kBitmapTableAllOnes);
    write_file(dir.file("ones.qcow2"), bytes);
    auto o = open_path(dir.file("ones.qcow2"), false);
    INFO(o.why);
    REQUIRE(o.store);
    CHECK(find(*o.store, "b0")->dirty_bytes() == 4 << 20);
  }
  {
    // fleece opened without keep_bitmaps writes: the autoclear bit goes,
    // and every stored bitmap is inconsistent afterwards (the spec's rule).
    auto f = std::make_shared<GrowingFile>(read_file(img));
    auto i = run(Qcow2Image::open(f, {}));
    REQUIRE(i.has_value());
    CHECK(((*i)->header().autoclear_features & qcow2::kAutoclearBitmaps) == 0);
    write_file(dir.file("stale.qcow2"), f->bytes());
    auto o = open_path(dir.file("stale.qcow2"), true);
    INFO(o.why);
    REQUIRE(o.store);
    REQUIRE(find(*o.store, "b0"));
    CHECK(find(*o.store, "b0")->inconsistent());
    // Rewritten as a fresh, in-use entry: QEMU sees it inconsistent too.
    write_file(dir.file("stale.qcow2"), o.file->bytes());
    CHECK(qemu_bitmaps(dir.file("stale.qcow2")) == "b0 65536 in-use");
    auto [crc, cout] = shell("qemu-img check '" + dir.file("stale.qcow2") + "'");
    INFO(cout);
    CHECK(cout.find("ERROR") == std::string::npos);  // the old table may leak, nothing worse
  }
}

TEST_CASE("qcow2 bitmaps: hostile directories are refused with a reason, never trusted") {
  TempDir dir;
  const std::string img = qemu_with_bitmaps(dir, "h.qcow2", {"b0", "b1"});
  const auto good = read_file(img);
  const uint64_t d = find_ext_dir(img);
  const uint64_t table = qcow2::load_be64(good.data() + d);
  struct Case {
    const char* what;
    std::function<void(std::vector<std::byte>&)> edit;
    const char* says;
  };
  const std::vector<Case> cases = {
      {"type", [&](auto& b) { b[d + 16] = std::byte{2}; }, "type 2"},
      {"empty name", [&](auto& b) { qcow2::store_be16(b.data() + d + 18, 0); }, "name of 0"},
      {"reserved flag", [&](auto& b) { b[d + 15] = std::byte{0x80}; }, "reserved flags"},
      {"granularity", [&](auto& b) { b[d + 17] = std::byte{40}; }, "granularity_bits 40"},
      {"table size", [&](auto& b) { qcow2::store_be32(b.data() + d + 8, 99); }, "99 entries"},
      {"table on L1", [&](auto& b) { qcow2::store_be64(b.data() + d, 0x30000); }, "metadata"},
      {"table past end", [&](auto& b) { qcow2::store_be64(b.data() + d, 1ull << 40); },
       "outside the file"},
      {"extra data", [&](auto& b) { qcow2::store_be32(b.data() + d + 20, 8); }, "extra data"},
      {"table reserved bits",
       [&](auto& b) { b[table] = std::byte{0x01}; }, "reserved bits"},
  };
  for (auto& c : cases) {
    CAPTURE(c.what);
    auto bytes = good;
    c.edit(bytes);
    write_file(dir.file("bad.qcow2"), bytes);
    for (bool writable : {false, true}) {
      auto o = open_path(dir.file("bad.qcow2"), writable);
      INFO(o.why);
      CHECK_FALSE(o.store);
      CHECK(o.why.find(c.says) != std::string::npos);
      if (writable) {
        // The bitmaps are invalidated before anything writes the disk.
        CHECK((o.image->header().autoclear_features & qcow2::kAutoclearBitmaps) == 0);
        write_file(dir.file("after.qcow2"), o.file->bytes());
        auto [irc, info] = shell("qemu-img info '" + dir.file("after.qcow2") + "' 2>&1");
        CHECK(irc == 0);
      }
    }
  }
  // A data cluster pointing at the refcount table.
  {
    auto bytes = good;
    const uint64_t d1 = d + 32;  // the second entry (24 + name "b0", padded to 32)
    const uint64_t table1 = qcow2::load_be64(bytes.data() + d1);
    qcow2::store_be64(bytes.data() + table1, 0x10000);  // the refcount table
    write_file(dir.file("bad2.qcow2"), bytes);
    auto o = open_path(dir.file("bad2.qcow2"), false);
    INFO(o.why);
    CHECK_FALSE(o.store);
    CHECK(o.why.find("metadata") != std::string::npos);
  }
  // Random damage to the directory and first table: no crash, and either a
  // clean load or a reason.
  std::mt19937 rng(5);
  for (int i = 0; i < 300; ++i) {
    auto bytes = good;
    for (int k = 0; k < 1 + int(rng() % 4); ++k) {
      const uint64_t at = (rng() % 2 ? d : table) + rng() % 64;
      bytes[at] = std::byte(rng());
    }
    auto f = std::make_shared<GrowingFile>(bytes);
    auto im = run(Qcow2Image::open(f, {.read_only = true, .keep_bitmaps = true}));
    REQUIRE(im.has_value());
    std::string why;
    auto st = run(Qcow2BitmapStore::open(*im, &why));
    if (!st) CHECK(!why.empty());
  }
}
