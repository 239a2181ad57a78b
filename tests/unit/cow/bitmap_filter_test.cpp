// BitmapFilter: every write path marks before issuing; swap under a closed
// write gate puts each write in exactly one of the two bitmaps.
#include "block/memory_device.hpp"
#include "cow/bitmap_filter.hpp"
#include "cow/write_gate.hpp"
#include "tests/unit/cow/cbw_test_support.hpp"

#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <set>
#include <thread>

using namespace fleece;
using namespace fleece::cbwtest;
using cow::BitmapFilter;
using cow::DirtyBitmap;

namespace {

std::shared_ptr<DirtyBitmap> make(uint64_t size, uint64_t gran, std::string name) {
  auto r = DirtyBitmap::create(std::move(name), size, gran);
  REQUIRE(r.has_value());
  return *r;
}

// Fails every write, to show the mark happens before the write is issued.
class FailingDisk final : public block::Device {
 public:
  explicit FailingDisk(uint64_t size) : size_(size) {}
  uint64_t size() const override { return size_; }
  block::Capabilities capabilities() const override { return {}; }
  Task<std::error_code> read(uint64_t, std::span<std::byte>) override { co_return std::error_code{}; }
  Task<std::error_code> write(uint64_t, std::span<const std::byte>, block::WriteFlags) override {
    co_return std::make_error_code(std::errc::io_error);
  }
  Task<std::error_code> write_zeroes(uint64_t, uint64_t, block::ZeroFlags) override {
    co_return std::make_error_code(std::errc::io_error);
  }
  Task<std::error_code> trim(uint64_t, uint64_t, block::WriteFlags) override {
    co_return std::make_error_code(std::errc::io_error);
  }
  Task<std::error_code> flush() override { co_return std::error_code{}; }
  Task<std::error_code> block_status(uint64_t, uint64_t len, std::vector<block::Extent>& out) override {
    out.push_back({len, 0, 1});
    co_return std::error_code{};
  }

 private:
  uint64_t size_;
};

}  // namespace

TEST_CASE("bitmap filter: write, write_zeroes and trim mark enabled bitmaps; reads do not") {
  const uint64_t size = 4 << 20, g = 65536;
  auto disk = std::make_shared<block::MemoryDevice>(size);
  BitmapFilter f(disk);
  auto a = make(size, g, "a");
  auto d = make(size, g, "off");
  d->set_enabled(false);
  CHECK(!f.attach(a));
  CHECK(!f.attach(d));
  CHECK(f.attach(make(size, g, "a")) == std::make_error_code(std::errc::file_exists));
  CHECK(f.attach(make(size + 1, g, "x")) == std::make_error_code(std::errc::invalid_argument));
  run([&]() -> Task<void> {
    std::vector<std::byte> buf(4096, std::byte{7});
    CHECK(!co_await f.write(g * 2 + 100, buf, {}));
    CHECK(!co_await f.write_zeroes(g * 10, 1, {}));
    CHECK(!co_await f.trim(g * 20 - 1, 2, {}));
    std::vector<std::byte> out(8192);
    CHECK(!co_await f.read(g * 30, out));
    std::vector<block::Extent> ex;
    CHECK(!co_await f.block_status(0, size, ex));
    CHECK(!co_await f.flush());
    // The data went through.
    CHECK(!co_await f.read(g * 2 + 100, out));
    CHECK(out[0] == std::byte{7});
  });
  CHECK(a->dirty_bytes() == 4 * g);
  CHECK(a->is_dirty(g * 2, g));
  CHECK(a->is_dirty(g * 10, 1));
  CHECK(a->is_dirty(g * 19, 1));
  CHECK(a->is_dirty(g * 20, 1));
  CHECK_FALSE(a->is_dirty(g * 30, g));
  CHECK(d->dirty_bytes() == 0);
  auto gone = f.detach("a");
  CHECK(gone == a);
  CHECK(f.detach("a") == nullptr);
  run([&]() -> Task<void> {
    std::vector<std::byte> buf(512);
    CHECK(!co_await f.write(g * 40, buf, {}));
  });
  CHECK_FALSE(a->is_dirty(g * 40, 1));  // detached: no longer marked
  CHECK(f.bitmaps().size() == 1);
}

TEST_CASE("bitmap filter: a failed write is still marked (over-reporting is safe)") {
  const uint64_t size = 1 << 20;
  BitmapFilter f(std::make_shared<FailingDisk>(size));
  auto a = make(size, 4096, "a");
  CHECK(!f.attach(a));
  run([&]() -> Task<void> {
    std::vector<std::byte> buf(10);
    CHECK(co_await f.write(0, buf, {}));
    CHECK(co_await f.write_zeroes(8192, 10, {}));
    CHECK(co_await f.trim(16384, 10, {}));
  });
  CHECK(a->dirty_bytes() == 3 * 4096);
}

TEST_CASE("bitmap filter: swap keeps the name and granularity, freezes the old one") {
  const uint64_t size = 1 << 20;
  BitmapFilter f(std::make_shared<block::MemoryDevice>(size));
  auto a = make(size, 8192, "a");
  a->set_persistent(true);
  CHECK(!f.attach(a));
  a->mark(0, 1);
  auto frozen = f.swap("a");
  REQUIRE(frozen.has_value());
  CHECK(*frozen == a);
  CHECK(a->frozen());
  auto now = f.find("a");
  REQUIRE(now);
  CHECK(now != a);
  CHECK(now->granularity() == 8192);
  CHECK(now->persistent());
  CHECK(now->enabled());
  CHECK(now->dirty_bytes() == 0);
  CHECK(f.swap("nope").error() == std::make_error_code(std::errc::no_such_file_or_directory));
  CHECK(f.swap("a", make(size, 8192, "b")).error() ==
        std::make_error_code(std::errc::invalid_argument));
  auto bad = make(size, 8192, "bad");
  bad->set_inconsistent();
  CHECK(!f.attach(bad));
  CHECK(f.swap("bad").error() == std::make_error_code(std::errc::operation_not_permitted));
}

TEST_CASE("bitmap filter: swap with the gate closed puts every write in exactly one bitmap") {
  // Writers on two threads each write a granule of their own, through the
  // gate; the swap happens with the gate closed and drained. Writes that
  // completed before the close must be exactly the frozen bitmap; all
  // others exactly the fresh one. The second half of the granules waits
  // (outside the gate) for the swap, so a loaded machine that runs every
  // writer before the swapper still leaves writes on both sides of it.
  const uint64_t g = 4096, granules = 8192, size = g * granules;
  auto disk = std::make_shared<block::MemoryDevice>(size);
  auto filter = std::make_shared<BitmapFilter>(disk);
  REQUIRE(!filter->attach(make(size, g, "inc")));
  cow::WriteGate gate;
  asio::io_context io;
  std::atomic<uint64_t> next{0};
  std::mutex mu;
  std::set<uint64_t> completed, before;
  std::shared_ptr<DirtyBitmap> frozen;
  std::atomic<int> writers_done{0};
  std::atomic<bool> swapped{false};
  const int writers = 16;
  for (int w = 0; w < writers; ++w) {
    asio::co_spawn(io, [&]() -> Task<void> {
      std::vector<std::byte> buf(512, std::byte{1});
      for (;;) {
        const uint64_t k = next.fetch_add(1);
        if (k >= granules) break;
        while (k >= granules / 2 && !swapped.load())
          co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
        auto ticket = co_await gate.enter();
        co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
        const uint64_t off = k * g + (k % 7) * 512;
        CHECK(!co_await filter->write(off, buf, {}));
        {
          std::lock_guard lk(mu);
          completed.insert(k);
        }
        ticket.reset();
        co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
      }
      ++writers_done;
    }, asio::detached);
  }
  asio::co_spawn(io, [&]() -> Task<void> {
    while (next.load() < granules / 3)
      co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
    co_await gate.close();
    {
      std::lock_guard lk(mu);
      before = completed;
    }
    auto r = filter->swap("inc");
    CHECK(r.has_value());
    if (r) frozen = *r;
    gate.open();
    swapped = true;
  }, asio::detached);
  std::thread t([&] { io.run(); });
  io.run();
  t.join();
  CHECK(writers_done == writers);
  REQUIRE(frozen);
  auto fresh = filter->find("inc");
  REQUIRE(fresh);
  CHECK(before.size() > 0);
  CHECK(before.size() <= granules / 2);
  CHECK(completed.size() == granules);
  uint64_t in_frozen = 0, in_fresh = 0, wrong = 0;
  for (uint64_t k = 0; k < granules; ++k) {
    const bool f = frozen->is_dirty(k * g, g), n = fresh->is_dirty(k * g, g);
    in_frozen += f;
    in_fresh += n;
    if (f == n || f != (before.count(k) == 1)) ++wrong;
  }
  CHECK(wrong == 0);
  CHECK(in_frozen == before.size());
  CHECK(in_frozen + in_fresh == granules);
}
