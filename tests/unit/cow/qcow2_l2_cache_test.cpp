// The bounded L2 cache: Qcow2L2Cache's rules (least recently used first;
// dirty, pinned and in-write-back tables stay), and a qcow2 image with a
// tiny cache under random and concurrent I/O over a large sparse image,
// checked against a model, by qemu-img check and by qemu-img compare.
#include "block/raw_file.hpp"
#include "cow/backing_chain.hpp"
#include "cow/qcow2_image.hpp"
#include "cow/qcow2_l2_cache.hpp"
#include "tests/unit/cow/qcow2_doctest_support.hpp"
#include "util/log.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <doctest/doctest.h>

#include <fmt/format.h>

using namespace fleece;
using namespace fleece::cow;
using namespace fleece::cow::test;

namespace {

constexpr uint64_t kKiB = 1024, kMiB = 1024 * 1024;

Qcow2L2Cache::Table table(uint64_t host) { return std::make_shared<Qcow2MetaTable>(host, 4096); }

struct Model {
  std::vector<std::byte> bytes;
  uint64_t cs;
  void write(uint64_t off, std::span<const std::byte> d) {
    std::copy(d.begin(), d.end(), bytes.begin() + off);
  }
  void zero(uint64_t off, uint64_t len) { std::fill_n(bytes.begin() + off, len, std::byte{0}); }
  // Qcow2Image::trim: whole clusters inward; the last counts whole at the end.
  void trim(uint64_t off, uint64_t len) {
    const uint64_t end = off + len;
    const uint64_t first = (off + cs - 1) / cs;
    const uint64_t stop = end == bytes.size() ? (end + cs - 1) / cs : end / cs;
    for (uint64_t g = first; g < stop; ++g) {
      const uint64_t s = g * cs;
      zero(s, std::min(cs, bytes.size() - s));
    }
  }
};

struct Image {
  TempDir dir;
  std::string base = dir.file("base.img"), path = dir.file("top.qcow2");
  std::shared_ptr<Qcow2Image> img;
  Model model;

  Image(uint64_t size, uint32_t cs, uint64_t limit) {
    log::set_level(log::Level::error);
    // The backing covers the first half: the rest falls through to zeroes.
    model.bytes = pattern(size / 2, 11);
    model.cs = cs;
    write_file(base, model.bytes);
    model.bytes.resize(size);
    sh_ok(fmt::format("cd '{}' && qemu-img create -q -f qcow2 -o cluster_size={} -b base.img "
                      "-F raw top.qcow2 {}",
                      dir.path.string(), cs, size));
    std::string why;
    auto file = block::open_raw_file(path, {}, &why);
    REQUIRE(file);
    auto opened = run(Qcow2Image::open(*file, {.l2_cache_bytes = limit}, &why));
    INFO(why);
    REQUIRE(opened);
    img = *opened;
    auto bfile = block::open_raw_file(base, {.read_only = true}, &why);
    REQUIRE(bfile);
    img->set_backing(*bfile);
    CHECK(img->l2_cache_limit() == limit);
  }

  void check_with_qemu() {
    REQUIRE(!run(img->flush()));
    auto [rc, out] = shell("qemu-img check -f qcow2 '" + path + "'");
    INFO(out);
    CHECK(rc == 0);
    CHECK(out.find("No errors were found") != std::string::npos);
    write_file(dir.file("model.raw"), model.bytes);
    sh_ok(fmt::format("qemu-img compare -f qcow2 -F raw '{}' '{}'", path, dir.file("model.raw")));
  }
};

}  // namespace

TEST_CASE("Qcow2L2Cache: least recently used clean, unpinned tables go first") {
  Qcow2L2Cache c(3 * 4096);
  for (uint64_t i = 0; i < 3; ++i) c.insert(i, table(i * 4096));
  CHECK(c.tables() == 3);
  CHECK(c.find(0));  // 0 is now the most recently used: 1 is the oldest
  c.insert(3, table(3 * 4096));
  CHECK(c.tables() == 3);
  CHECK(!c.find(1));
  CHECK(c.evictions() == 1);

  // Dirty: stays, even when the oldest.
  c.find(2)->set_entry(0, 42);
  c.find(0);
  c.find(3);
  c.insert(4, table(4 * 4096));  // 2 is oldest but dirty: 0 goes
  CHECK(c.find(2));
  CHECK(!c.find(0));
  // Pinned: stays.
  auto pinned = c.find(3);
  c.find(4);
  c.find(2);
  c.insert(5, table(5 * 4096));  // order now 5 2 4 3: 3 pinned, 4 goes
  CHECK(c.find(3));
  CHECK(!c.find(4));
  // Being written back: stays until end_writeback(), clean or not.
  std::vector<Qcow2MetaWrite> w;
  c.take_dirty(512, w);
  CHECK(w.size() == 1);
  pinned.reset();
  c.find(5);
  c.find(3);
  c.insert(6, table(6 * 4096));  // order 6 3 5 2: 2 is writing, 5 goes
  CHECK(c.find(2));
  CHECK(!c.find(5));
  CHECK(c.bytes() == 3 * 4096);
  c.end_writeback();
  c.set_limit(4096);
  CHECK(!c.over_limit_dirty());
  c.trim();
  CHECK(c.tables() == 1);
  CHECK(c.bytes() == 4096);
  // Below one table's size, one table is still kept.
  c.set_limit(1);
  c.trim();
  CHECK(c.tables() == 1);
  c.insert(7, table(7 * 4096));
  CHECK(c.tables() == 1);
  CHECK(c.find(7));
  c.find(7)->set_entry(1, 1);
  c.insert(8, table(8 * 4096));
  CHECK(c.over_limit_dirty());
}

TEST_CASE("qcow2 L2 cache: a tiny limit holds under random I/O over a large sparse image") {
  // 4 KiB clusters: one L2 table maps 2 MiB, so 64 MiB has 32 tables; the
  // cache keeps 3.
  const uint64_t size = 64 * kMiB;
  const uint32_t cs = 4096;
  const uint64_t limit = 3 * cs;
  Image im(size, cs, limit);
  auto& img = *im.img;
  std::mt19937_64 rng(5);
  uint64_t max_seen = 0;
  for (int i = 0; i < 600; ++i) {
    CAPTURE(i);
    const uint64_t len = 1 + rng() % (24 * kKiB);
    const uint64_t off = rng() % (size - len);
    switch (rng() % 6) {
      case 0:
      case 1: {
        auto d = pattern(len, uint32_t(rng()));
        REQUIRE(!run(img.write(off, d, {})));
        im.model.write(off, d);
        break;
      }
      case 2:
        REQUIRE(!run(img.write_zeroes(off, len, {})));
        im.model.zero(off, len);
        break;
      case 3:
        REQUIRE(!run(img.trim(off, len, {})));
        im.model.trim(off, len);
        break;
      case 4: {
        std::vector<std::byte> got(len);
        REQUIRE(!run(img.read(off, got)));
        CHECK(std::equal(got.begin(), got.end(), im.model.bytes.begin() + off));
        break;
      }
      case 5:
        if (rng() % 8 == 0) REQUIRE(!run(img.flush()));
        break;
    }
    max_seen = std::max(max_seen, img.l2_cache_bytes());
    REQUIRE(img.l2_cache_bytes() <= limit);
  }
  CHECK(max_seen == limit);  // the cache was full, so tables were dropped
  CHECK(read_all(img) == im.model.bytes);
  im.check_with_qemu();
}

TEST_CASE("qcow2 L2 cache: concurrent writers and readers with one table cached") {
  // 512-byte clusters: a table maps 32 KiB; 8 MiB has 256 tables. Each
  // worker owns every 8th cluster, so the model is exact while tables are
  // shared, dropped and reloaded under the workers.
  const uint64_t size = 8 * kMiB;
  const uint32_t cs = 512;
  Image im(size, cs, cs);
  auto& img = *im.img;
  const uint64_t clusters = size / cs;
  constexpr int kWorkers = 8;
  int failures = 0;
  int done = 0;
  auto worker = [&](int w) -> boost::asio::awaitable<void> {
    std::mt19937_64 rng(w + 100);
    for (int i = 0; i < 300; ++i) {
      const uint64_t g = (rng() % (clusters / kWorkers)) * kWorkers + uint64_t(w);
      const uint64_t in = rng() % cs;
      const uint64_t len = 1 + rng() % (cs - in);
      const uint64_t off = g * cs + in;
      std::error_code ec;
      switch (rng() % 4) {
        case 0:
        case 1: {
          auto d = pattern(len, uint32_t(rng()));
          ec = co_await img.write(off, d, {});
          im.model.write(off, d);
          break;
        }
        case 2:
          ec = co_await img.write_zeroes(g * cs, cs, {});
          im.model.zero(g * cs, cs);
          break;
        case 3: {
          std::vector<std::byte> got(len);
          ec = co_await img.read(off, got);
          if (!std::equal(got.begin(), got.end(), im.model.bytes.begin() + off)) ++failures;
          break;
        }
      }
      if (ec) ++failures;
    }
    ++done;
  };
  boost::asio::io_context io;
  for (int w = 0; w < kWorkers; ++w) boost::asio::co_spawn(io, worker(w), boost::asio::detached);
  io.run();
  CHECK(done == kWorkers);
  CHECK(failures == 0);
  CHECK(img.l2_cache_bytes() <= cs);
  CHECK(read_all(img) == im.model.bytes);
  im.check_with_qemu();
}

TEST_CASE("qcow2 L2 cache: the limit reaches every layer of a chain; the default covers 32 GiB") {
  log::set_level(log::Level::error);
  TempDir dir;
  sh_ok(fmt::format("cd '{}' && qemu-img create -q -f qcow2 base.qcow2 100G && "
                    "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 && "
                    "qemu-img create -q -f qcow2 -o cluster_size=512 small.qcow2 1G",
                    dir.path.string()));
  std::string why;
  auto chain = run(BackingChain::open(dir.file("top.qcow2"), "qcow2",
                                      {.l2_cache_bytes = 256 * kKiB}, &why));
  INFO(why);
  REQUIRE(chain);
  for (const auto& layer : (*chain)->layers()) CHECK(layer.qcow2->l2_cache_limit() == 256 * kKiB);
  auto dflt = run(BackingChain::open(dir.file("top.qcow2"), "qcow2", {}, &why));
  REQUIRE(dflt);
  // 32 GiB / 64 KiB clusters * 8 bytes an entry.
  CHECK((*dflt)->layers().front().qcow2->l2_cache_limit() == 4 * kMiB);
  auto small = run(BackingChain::open(dir.file("small.qcow2"), "qcow2", {}, &why));
  REQUIRE(small);
  // 1 GiB of 512-byte clusters would need 16 MiB: the whole disk, under 32 MiB.
  CHECK((*small)->layers().front().qcow2->l2_cache_limit() == 16 * kMiB);
}
