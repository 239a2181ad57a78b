// take_chain_snapshot: a live external snapshot on a backing chain, checked
// against a model and qemu-img; then the usual follow-up, committing the
// old active layer below the new one.
#include "snapshot/chain_snapshot.hpp"

#include "cow/cbw_filter.hpp"
#include "snapshot/commit_job.hpp"
#include "tests/unit/cow/qcow2_doctest_support.hpp"
#include "util/log.hpp"

#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>

#include <doctest/doctest.h>

#include <fmt/format.h>

using namespace fleece;
using namespace fleece::cow::test;
using fleece::block::Task;
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kSize = 4 * kMiB;

// base.img (raw) <- a.qcow2 (active).
struct Rig {
  TempDir dir;
  std::string base = dir.file("base.img"), a = dir.file("a.qcow2"), s = dir.file("s.qcow2");
  std::shared_ptr<cow::BackingChain> chain;
  std::vector<std::byte> model;
  Rig() {
    log::set_level(log::Level::error);
    sh_ok(fmt::format("cd '{}' && qemu-img create -q -f raw base.img 4M && "
                      "qemu-io -f raw -c 'write -P 1 0 2M' base.img && "
                      "qemu-img create -q -f qcow2 -b base.img -F raw a.qcow2 && "
                      "qemu-io -c 'write -P 2 1M 2M' a.qcow2",
                      dir.path.string()));
    auto c = run(cow::BackingChain::open(a, "qcow2"));
    REQUIRE(c);
    chain = *c;
    model = read_all(*chain->device());
  }
  std::vector<std::byte> flat(const std::string& image) {
    const std::string out = dir.file("flat.raw");
    sh_ok(fmt::format("rm -f '{1}' && qemu-img convert -O raw '{0}' '{1}'", image, out));
    return read_file(out);
  }
  void write(uint64_t off, std::vector<std::byte> data) {
    REQUIRE(!run(chain->device()->write(off, data, {})));
    std::copy(data.begin(), data.end(), model.begin() + std::ptrdiff_t(off));
  }
};

}  // namespace

TEST_CASE("chain snapshot: writes land in the new overlay, the old layer stays as it was") {
  Rig r;
  r.write(100 * 1024, pattern(8192, 1));  // before the snapshot: into a.qcow2
  int drains = 0, resumes = 0;
  snapshot::Quiesce q{.drain = [&]() -> Task<void> {
                        ++drains;
                        co_return;
                      },
                      .resume = [&] { ++resumes; }};
  std::string why;
  auto ec = run(snapshot::take_chain_snapshot(r.chain, {.file = r.s}, &why, q));
  INFO(why);
  REQUIRE(!ec);
  CHECK(drains == 1);
  CHECK(resumes == 1);
  auto ls = r.chain->layers();
  REQUIRE(ls.size() == 3);
  CHECK(ls[0].path == r.s);
  CHECK(!ls[0].read_only);
  CHECK(ls[0].backing_name == "a.qcow2");
  CHECK(ls[0].backing_format == "qcow2");
  CHECK(ls[1].path == r.a);
  CHECK(ls[1].read_only);
  CHECK(ls[1].device->capabilities().read_only);
  CHECK(read_all(*r.chain->device()) == r.model);

  const auto a_bytes = read_file(r.a);
  const auto a_view = r.flat(r.a);
  r.write(0, pattern(65536, 2));
  r.write(3 * kMiB + 4096, pattern(12345, 3));
  REQUIRE(!run(r.chain->device()->flush()));
  CHECK(read_file(r.a) == a_bytes);
  CHECK(read_all(*r.chain->device()) == r.model);
  r.chain.reset();

  CHECK(r.flat(r.a) == a_view);
  CHECK(r.flat(r.s) == r.model);
  auto [crc, check] = shell(fmt::format("qemu-img check '{}' && qemu-img check '{}'", r.s, r.a));
  INFO(check);
  CHECK(crc == 0);
  auto [irc, info] = shell(fmt::format("qemu-img info --backing-chain '{}'", r.s));
  INFO(info);
  CHECK(info.find("backing file: a.qcow2") != std::string::npos);
  CHECK(info.find("backing file: base.img") != std::string::npos);
}

TEST_CASE("chain snapshot: under concurrent writes through a write gate") {
  Rig r;
  auto filter = std::make_shared<cow::CbwFilter>(r.chain->device());
  std::vector<std::byte> a_after;
  run([&]() -> Task<void> {
    bool stop = false;
    int writers_done = 0;
    auto writer = [&](uint32_t seed) -> Task<void> {
      std::mt19937 rng(seed);
      for (int i = 0; !stop || i < 50; ++i) {
        // Each writer owns a third of the disk: overlapping concurrent
        // writes have no defined order, so the model could not predict them.
        const uint64_t region = kSize / 3 / 512 * 512;
        const uint64_t len = 512 * (1 + rng() % 64);
        const uint64_t off = (seed - 1) * region + (rng() % ((region - len) / 512)) * 512;
        auto data = pattern(len, seed * 10000 + uint32_t(i));
        auto ec = co_await filter->write(off, data, {});
        REQUIRE(!ec);
        std::copy(data.begin(), data.end(), r.model.begin() + std::ptrdiff_t(off));
        // Cached writes may complete without suspending; yield so the timer
        // that takes the snapshot (and sets stop) gets to run.
        co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
      }
      ++writers_done;
    };
    auto ex = co_await asio::this_coro::executor;
    for (uint32_t w = 1; w <= 3; ++w) asio::co_spawn(ex, writer(w), asio::detached);
    asio::steady_timer t(ex, 20ms);
    co_await t.async_wait(asio::use_awaitable);
    std::string why;
    // Named arguments: GCC 12 may destroy temporaries of a co_await twice.
    snapshot::ChainSnapshotOptions options{.file = r.s};
    snapshot::Quiesce gate{.drain = [&]() -> Task<void> { co_await filter->close_gate(); },
                           .resume = [&] { filter->open_gate(); }};
    auto chain = r.chain;
    auto ec = co_await snapshot::take_chain_snapshot(chain, options, &why, gate);
    REQUIRE(!ec);
    a_after = read_file(r.a);  // nothing runs between the swap and this
    stop = true;
    while (writers_done < 3) {
      asio::steady_timer w(ex, 2ms);
      co_await w.async_wait(asio::use_awaitable);
    }
    auto fec = co_await filter->flush();
    REQUIRE(!fec);
  }());
  CHECK(read_file(r.a) == a_after);  // no write reached the old layer after the swap
  CHECK(read_all(*filter) == r.model);
  filter.reset();
  r.chain.reset();
  CHECK(r.flat(r.s) == r.model);
  auto [crc, check] = shell(fmt::format("qemu-img check '{}' && qemu-img check '{}'", r.s, r.a));
  INFO(check);
  CHECK(crc == 0);
}

TEST_CASE("chain snapshot: refusals change nothing") {
  Rig r;
  write_file(r.s, pattern(100, 9));
  std::string why;
  auto ec = run(snapshot::take_chain_snapshot(r.chain, {.file = r.s}, &why));
  CHECK(ec == std::errc::file_exists);
  CHECK(why.find(r.s) != std::string::npos);
  CHECK(read_file(r.s) == pattern(100, 9));  // left alone
  CHECK(r.chain->length() == 2);
  ec = run(snapshot::take_chain_snapshot(r.chain, {.file = r.dir.file("x.raw"), .format = "raw"},
                                         &why));
  CHECK(ec);
  CHECK(why.find("raw") != std::string::npos);
  CHECK(!std::filesystem::exists(r.dir.file("x.raw")));
  ec = run(snapshot::take_chain_snapshot(r.chain, {.file = r.dir.file("no/such/dir.qcow2")},
                                         &why));
  CHECK(ec);
  CHECK(r.chain->length() == 2);
  CHECK(!r.chain->layers()[0].read_only);
}

TEST_CASE("chain snapshot: of a raw disk, then commit the old layer below the new one") {
  TempDir dir;
  log::set_level(log::Level::error);
  const std::string raw = dir.file("disk.raw"), ov = dir.file("ov.qcow2"),
                    ov2 = dir.file("ov2.qcow2");
  write_file(raw, pattern(2 * kMiB, 5));
  auto c = run(cow::BackingChain::open(raw, "raw"));
  REQUIRE(c);
  auto chain = *c;
  auto model = read_all(*chain->device());
  REQUIRE(!run(snapshot::take_chain_snapshot(chain, {.file = ov})));
  CHECK(chain->length() == 2);
  CHECK(chain->layers()[1].read_only);
  auto d1 = pattern(70000, 6);
  REQUIRE(!run(chain->device()->write(5000, d1, {})));
  std::copy(d1.begin(), d1.end(), model.begin() + 5000);
  CHECK(read_file(raw) == pattern(2 * kMiB, 5));

  // Commit the active layer: refused; snapshot again, then commit ov.qcow2.
  std::string why;
  REQUIRE(!run(snapshot::take_chain_snapshot(chain, {.file = ov2}, &why)));
  bool done = false;
  run([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    CHECK(!snapshot::CommitJob::create(ex, chain, {.job_id = "x", .top = ov2}, {}, &why));
    auto job = snapshot::CommitJob::create(
        ex, chain, {.job_id = "c", .top = ov},
        {.completed = [&](const snapshot::BlockJobInfo& i) {
          CHECK(i.error.empty());
          done = true;
        }});
    REQUIRE(job);
    (*job)->start();
    auto d2 = pattern(4096, 7);
    auto ec = co_await chain->device()->write(8192, d2, {});
    REQUIRE(!ec);
    std::copy(d2.begin(), d2.end(), model.begin() + 8192);
    while (!done) {
      asio::steady_timer t(ex, 2ms);
      co_await t.async_wait(asio::use_awaitable);
    }
    auto fec = co_await chain->device()->flush();
    REQUIRE(!fec);
  }());
  REQUIRE(done);
  auto ls = chain->layers();
  REQUIRE(ls.size() == 2);
  CHECK(ls[0].path == ov2);
  CHECK(ls[1].path == raw);
  CHECK(read_all(*chain->device()) == model);
  chain.reset();
  sh_ok(fmt::format("qemu-img check '{}'", ov2));
  auto [irc, info] = shell(fmt::format("qemu-img info '{}'", ov2));
  CHECK(info.find("backing file: disk.raw") != std::string::npos);
}
