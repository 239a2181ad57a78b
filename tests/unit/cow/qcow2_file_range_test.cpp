// Qcow2Image::file_range through a backing chain: a range is offered only
// where one file holds the bytes contiguously (data clusters of one layer,
// or a raw base under unallocated layers), the bytes at the offset are the
// device's, and a host cluster being sent is not reused for other data.
#include "block/page_cache.hpp"
#include "block/raw_file.hpp"
#include "cow/backing_chain.hpp"
#include "cow/qcow2_image.hpp"
#include "tests/unit/cow/qcow2_doctest_support.hpp"
#include "util/log.hpp"

#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <doctest/doctest.h>

#include <fmt/format.h>

#include <fcntl.h>
#include <unistd.h>

using namespace fleece;
using namespace fleece::cow;
using namespace fleece::cow::test;

namespace {

constexpr uint64_t kKiB = 1024, kMiB = 1024 * 1024;

bool have_cachestat() {
  const int fd = ::open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  const bool ok = fd >= 0 && block::resident(fd, 0, 1);
  if (fd >= 0) ::close(fd);
  return ok;
}

std::vector<std::byte> pread_range(const block::FileRange& r, uint64_t len) {
  std::vector<std::byte> v(len);
  REQUIRE(::pread(r.fd, v.data(), len, off_t(r.offset)) == ssize_t(len));
  return v;
}

std::vector<std::byte> read_dev(block::Device& d, uint64_t off, uint64_t len) {
  std::vector<std::byte> v(len);
  REQUIRE(!run(d.read(off, v)));
  return v;
}

// The range is offered and pread at it gives what the device reads.
void check_range(block::Device& d, uint64_t off, uint64_t len) {
  CAPTURE(off);
  CAPTURE(len);
  auto r = d.file_range(off, len);
  REQUIRE(r);
  CHECK(r->keep);
  CHECK(pread_range(*r, len) == read_dev(d, off, len));
}

// A qcow2 image made by fleece in a real (page-cached) file at path.
std::shared_ptr<Qcow2Image> create_on_file(const std::string& path, Qcow2CreateOptions o) {
  log::set_level(log::Level::error);
  write_file(path, {});
  std::string why;
  auto file = block::open_raw_file(path, {}, &why);
  REQUIRE(file);
  auto created = run(Qcow2Image::create(*file, std::move(o)));
  REQUIRE(created);
  return *created;
}

void check_qemu_img(const std::string& path) {
  auto [rc, out] = shell("qemu-img check -f qcow2 '" + path + "'");
  INFO(out);
  CHECK(rc == 0);
}

void check_none(block::Device& d, uint64_t off, uint64_t len) {
  CAPTURE(off);
  CAPTURE(len);
  CHECK(!d.file_range(off, len));
}

// raw base (pattern, 4 MiB) <- mid.qcow2 (data 1M..1M+256k, zero clusters
// at 2M, a compressed cluster at 3M) <- top.qcow2 (data 0..128k, clusters
// 5 then 4 written in that order: not contiguous in the file).
struct Chain {
  TempDir dir;
  std::string base = dir.file("base.img"), mid = dir.file("mid.qcow2"),
              top = dir.file("top.qcow2");
  std::shared_ptr<BackingChain> chain;
  Chain() {
    log::set_level(log::Level::error);
    write_file(base, pattern(4 * kMiB, 5));
    sh_ok(fmt::format("cd '{}' && qemu-img create -q -f qcow2 -b base.img -F raw mid.qcow2",
                      dir.path.string()));
    sh_ok(fmt::format("qemu-io -c 'write -P 0x11 1M 256k' -c 'write -z 2M 128k' "
                      "-c 'write -c -P 0x22 3M 64k' '{}'",
                      mid));
    sh_ok(fmt::format("cd '{}' && qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2",
                      dir.path.string()));
    sh_ok(fmt::format("qemu-io -c 'write -P 0x33 0 128k' -c 'write -P 0x55 320k 64k' "
                      "-c 'write -P 0x44 256k 64k' '{}'",
                      top));
    std::string why;
    auto c = run(BackingChain::open(top, "qcow2", {}, &why));
    INFO(why);
    REQUIRE(c);
    chain = *c;
    // Loads the L2 tables and the pages (the compressed cluster is not
    // readable by fleece, so it is stepped over).
    auto& d = *chain->device();
    (void)read_dev(d, 0, 3 * kMiB);
    (void)read_dev(d, 3 * kMiB + 64 * kKiB, kMiB - 64 * kKiB);
  }
};

}  // namespace

TEST_CASE("qcow2 file_range: one layer's contiguous data clusters or a raw base, else none") {
  if (!have_cachestat()) return;  // no cachestat (Linux < 6.5): nothing is ever offered
  Chain c;
  auto& d = *c.chain->device();
  SUBCASE("data clusters of the active layer, whole and partial clusters") {
    check_range(d, 0, 128 * kKiB);
    check_range(d, 16 * kKiB, 64 * kKiB);
    check_range(d, 4 * kKiB, 120 * kKiB);
    check_range(d, 256 * kKiB, 64 * kKiB);  // one cluster of the non-contiguous pair
    check_range(d, 320 * kKiB, 64 * kKiB);
  }
  SUBCASE("data clusters of a lower qcow2 layer, all unallocated above") {
    check_range(d, kMiB, 256 * kKiB);
    check_range(d, kMiB + 100 * kKiB, 100 * kKiB);
    auto r = d.file_range(kMiB, 256 * kKiB);
    REQUIRE(r);
    CHECK(pread_range(*r, 256 * kKiB) == filled(256 * kKiB, 0x11));
  }
  SUBCASE("the raw base under layers unallocated there") {
    check_range(d, 3 * kMiB + 512 * kKiB, 256 * kKiB);
    check_range(d, 512 * kKiB, 256 * kKiB);
    auto r = d.file_range(512 * kKiB, 256 * kKiB);
    REQUIRE(r);
    CHECK(r->offset == 512 * kKiB);  // raw: the same offset in the base file
  }
  SUBCASE("none: zero, compressed, split across layers, not contiguous") {
    check_none(d, 2 * kMiB, 128 * kKiB);           // zero clusters in mid
    check_none(d, 2 * kMiB + 64 * kKiB, 128 * kKiB);  // zero then unallocated (base)
    check_none(d, 3 * kMiB, 64 * kKiB);             // compressed in mid
    check_none(d, 64 * kKiB, 128 * kKiB);           // top data, then unallocated
    check_none(d, kMiB - 64 * kKiB, 128 * kKiB);    // base, then mid data
    check_none(d, 256 * kKiB, 128 * kKiB);          // clusters 4, 5 out of order in the file
    check_none(d, 0, 0);
    check_none(d, 4 * kMiB - 4 * kKiB, 8 * kKiB);   // past the end
  }
  SUBCASE("the range keeps its file open after the chain is gone") {
    auto r = d.file_range(0, 128 * kKiB);
    REQUIRE(r);
    c.chain.reset();
    CHECK(pread_range(*r, 128 * kKiB) == filled(128 * kKiB, 0x33));
  }
}

TEST_CASE("qcow2 file_range: an L2 table not cached yet, a backing past its end") {
  if (!have_cachestat()) return;
  log::set_level(log::Level::error);
  TempDir dir;
  write_file(dir.file("base.img"), pattern(kMiB, 9));
  sh_ok(fmt::format("cd '{}' && qemu-img create -q -f qcow2 -b base.img -F raw top.qcow2 2M",
                    dir.path.string()));
  sh_ok(fmt::format("qemu-io -c 'write -P 7 0 128k' '{}'", dir.file("top.qcow2")));
  std::string why;
  auto c = run(BackingChain::open(dir.file("top.qcow2"), "qcow2", {}, &why));
  REQUIRE(c);
  auto& d = *(*c)->device();
  check_none(d, 0, 128 * kKiB);  // not read yet: the L2 table is not in memory
  (void)read_dev(d, 0, 2 * kMiB);
  check_range(d, 0, 128 * kKiB);
  check_range(d, 512 * kKiB, 256 * kKiB);
  check_none(d, kMiB - 64 * kKiB, 128 * kKiB);  // past the backing's end: zeroes
  check_none(d, kMiB, 128 * kKiB);
}

TEST_CASE("qcow2 file_range: a cluster once sent is never reused for other data, and is punched once freed") {
  if (!have_cachestat()) return;
  TempDir dir;
  const std::string path = dir.file("img.qcow2");
  auto img = create_on_file(path, {.virtual_size = 8 * kMiB});
  const uint32_t cs = img->cluster_size();
  const auto a = pattern(cs, 1), b = pattern(cs, 2), c = pattern(cs, 3);
  REQUIRE(!run(img->write_cluster(0, a)));
  REQUIRE(!run(img->flush()));
  auto m = run(img->map_cluster(0));
  REQUIRE(m.has_value());
  const uint64_t host = m->host_offset;

  auto r = img->file_range(0, cs);
  REQUIRE(r);
  CHECK(r->offset == host);
  REQUIRE(!run(img->discard_cluster(0)));  // freed on disk, but still being sent
  CHECK(img->refcount(host) == 1);
  REQUIRE(!run(img->write_cluster(1, b)));  // must not land on host
  auto m1 = run(img->map_cluster(1));
  REQUIRE(m1.has_value());
  CHECK(m1->host_offset != host);
  CHECK(pread_range(*r, cs) == a);
  CHECK(read_dev(*img, 0, cs) == filled(cs, 0));

  // Sent: freed now, but retired: a socket may still hold its pages (a
  // sendfile reply the peer has not read yet), so other data never goes there.
  r.reset();
  CHECK(img->refcount(host) == 0);
  REQUIRE(!run(img->write_cluster(2, c)));
  auto m2 = run(img->map_cluster(2));
  REQUIRE(m2.has_value());
  CHECK(m2->host_offset != host);
  REQUIRE(!run(img->flush()));
  {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(pread_range(block::FileRange{fd, host, nullptr}, cs) == filled(cs, 0));  // punched
    ::close(fd);
  }
  CHECK(read_dev(*img, cs, 2 * cs) == [&] {
    auto v = b;
    v.insert(v.end(), c.begin(), c.end());
    return v;
  }());
  check_qemu_img(path);
}

TEST_CASE("qcow2 file_range: a run of sent clusters freed together is punched whole") {
  if (!have_cachestat()) return;
  TempDir dir;
  const std::string path = dir.file("img.qcow2");
  auto img = create_on_file(path, {.virtual_size = 8 * kMiB});
  const uint32_t cs = img->cluster_size();
  for (uint64_t g = 0; g < 4; ++g) REQUIRE(!run(img->write_cluster(g, pattern(cs, 10 + g))));
  REQUIRE(!run(img->flush()));
  auto m = run(img->map_cluster(0));
  REQUIRE(m.has_value());
  const uint64_t host = m->host_offset;
  auto r = img->file_range(0, 4 * cs);
  REQUIRE(r);
  CHECK(r->offset == host);
  r.reset();
  for (uint64_t g = 0; g < 4; ++g) REQUIRE(!run(img->discard_cluster(g)));
  REQUIRE(!run(img->flush()));
  for (uint64_t g = 0; g < 4; ++g) CHECK(img->refcount(host + g * cs) == 0);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  CHECK(pread_range(block::FileRange{fd, host, nullptr}, 4 * cs) == filled(4 * cs, 0));
  ::close(fd);
  check_qemu_img(path);
}

TEST_CASE("RangeLock::try_lock grants only what lock() would grant at once") {
  RangeLock lock;
  {
    auto shared = lock.try_lock(0, 9, true);
    REQUIRE(shared);
    CHECK(lock.try_lock(5, 5, true));
    CHECK(!lock.try_lock(9, 12, false));
    CHECK(lock.try_lock(10, 12, false));
  }
  CHECK(lock.held_count() == 0);
  // A queued writer is not overtaken by a shared try_lock.
  boost::asio::io_context io;
  auto held = lock.try_lock(0, 0, true);
  REQUIRE(held);
  bool got = false;
  auto writer = [&]() -> boost::asio::awaitable<void> {
    auto g = co_await lock.lock(0, 0, false);
    got = true;
  };
  boost::asio::co_spawn(io, writer(), boost::asio::detached);
  io.poll();
  CHECK(lock.waiter_count() == 1);
  CHECK(!lock.try_lock(0, 0, true));
  CHECK(lock.try_lock(1, 1, true));
  held.reset();
  io.run();
  CHECK(got);
  CHECK(lock.held_count() == 0);
}

TEST_CASE("qcow2 file_range: under concurrent writes, zeroes and discards a range holds its cluster's bytes") {
  if (!have_cachestat()) return;
  TempDir dir;
  const std::string path = dir.file("img.qcow2");
  const uint32_t cs = 4096;
  auto img = create_on_file(path, {.virtual_size = 4 * kMiB, .cluster_size = cs});
  // Every 8-byte word of guest cluster g's data says g, whatever version:
  // a range that shows another cluster's word was reused under the sender.
  constexpr uint64_t kClusters = 24;
  auto tagged = [&](uint64_t g) {
    std::vector<std::byte> v(cs);
    for (uint64_t i = 0; i < cs; i += 8) std::memcpy(v.data() + i, &g, 8);
    return v;
  };
  boost::asio::io_context io;
  int failures = 0, ranges = 0, writers_done = 0;
  auto yield = [&]() { return boost::asio::post(io, boost::asio::use_awaitable); };
  auto writer = [&](int w) -> boost::asio::awaitable<void> {
    std::mt19937_64 rng(w);
    // 400 changes each, and on until the readers have held enough ranges
    // (how many a loaded machine lets them hold in 400 varies).
    for (int i = 0; i < 400 || (ranges <= 150 && i < 20000); ++i) {
      const uint64_t g = rng() % kClusters;
      std::error_code ec;
      switch (rng() % 3) {
        case 0: ec = co_await img->write_cluster(g, tagged(g)); break;
        case 1: ec = co_await img->zero_cluster(g); break;
        case 2: ec = co_await img->discard_cluster(g); break;
      }
      if (ec) ++failures;
      co_await yield();
    }
    ++writers_done;
  };
  auto reader = [&](int r) -> boost::asio::awaitable<void> {
    std::mt19937_64 rng(100 + r);
    while (writers_done < 3) {
      const uint64_t g = rng() % kClusters;
      auto range = img->file_range(g * cs, cs);
      if (!range) {
        co_await yield();
        continue;
      }
      ++ranges;
      // Sending, slowly: long enough for a discard's flush and a reuse.
      boost::asio::steady_timer slow(io, std::chrono::microseconds(rng() % 3000));
      co_await slow.async_wait(boost::asio::use_awaitable);
      std::vector<uint64_t> words(cs / 8);
      if (::pread(range->fd, words.data(), cs, off_t(range->offset)) != ssize_t(cs)) ++failures;
      for (uint64_t x : words)
        if (x != g) {
          ++failures;
          break;
        }
    }
  };
  for (int w = 0; w < 3; ++w) boost::asio::co_spawn(io, writer(w), boost::asio::detached);
  for (int r = 0; r < 2; ++r) boost::asio::co_spawn(io, reader(r), boost::asio::detached);
  io.run();
  CHECK(writers_done == 3);
  CHECK(failures == 0);
  CHECK(ranges > 100);
  REQUIRE(!run(img->flush()));
  check_qemu_img(path);
}
