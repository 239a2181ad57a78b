// CommitJob: block-commit of an intermediate layer into base while the guest
// writes the active layer, checked against a model and against qemu-img.
#include "snapshot/commit_job.hpp"

#include "tests/unit/cow/qcow2_doctest_support.hpp"
#include "util/log.hpp"

#include <boost/asio/steady_timer.hpp>

#include <doctest/doctest.h>

#include <fmt/format.h>

#include <chrono>

using namespace fleece;
using namespace fleece::cow::test;
using fleece::block::Task;
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kSize = 8 * kMiB;

Task<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

// master.img (raw) <- cow.qcow2 <- newcow.qcow2, a distinct pattern at each
// level, as in the issue.
struct IssueChain {
  TempDir dir;
  std::string master = dir.file("master.img"), cow = dir.file("cow.qcow2"),
              newcow = dir.file("newcow.qcow2");
  std::vector<std::byte> before;      // guest-visible content at the start
  std::vector<std::byte> cow_before;  // cow.qcow2's own chain view at the start
  std::vector<std::byte> master_before;

  explicit IssueChain(uint64_t master_size = kSize) {
    log::set_level(log::Level::error);
    const auto p = dir.path.string();
    sh_ok(fmt::format("qemu-img create -q -f raw '{}' {}", master, master_size));
    sh_ok(fmt::format("qemu-io -f raw -c 'write -P 0xa0 0 3M' {} '{}'",
                      master_size >= 5 * kMiB ? "-c 'write -P 0xa1 4M 1M'" : "", master));
    sh_ok(fmt::format("cd '{}' && qemu-img create -q -f qcow2 -b master.img -F raw cow.qcow2 {}",
                      p, kSize));
    sh_ok(fmt::format("qemu-io -c 'write -P 0xb0 1M 2M' -c 'write -z 4M 128k' "
                      "-c 'write -P 0xb1 6M 100k' -c 'write -P 0xb2 7777k 5k' '{}'",
                      cow));
    sh_ok(fmt::format("cd '{}' && qemu-img create -q -f qcow2 -b cow.qcow2 -F qcow2 newcow.qcow2",
                      p));
    sh_ok(fmt::format("qemu-io -c 'write -P 0xc0 2M 1M' -c 'write -P 0xc1 6M 64k' '{}'", newcow));
    before = flat(newcow);
    master_before = read_file(master);
    cow_before = flat(cow);
  }

  std::vector<std::byte> flat(const std::string& image) {
    const std::string out = dir.file("flat.raw");
    sh_ok(fmt::format("rm -f '{1}' && qemu-img convert -O raw '{0}' '{1}'", image, out));
    return read_file(out);
  }

  std::shared_ptr<cow::BackingChain> open() {
    std::string why;
    auto c = run(cow::BackingChain::open(newcow, "qcow2", {}, &why));
    INFO(why);
    REQUIRE(c);
    return *c;
  }
};

struct Outcome {
  bool completed = false, cancelled = false;
  int errors = 0;
  snapshot::BlockJobInfo info;
  bool done() const { return completed || cancelled; }
};

snapshot::BlockJobEvents events_into(Outcome& o) {
  return {
      .completed = [&o](const snapshot::BlockJobInfo& i) { o.completed = true, o.info = i; },
      .cancelled = [&o](const snapshot::BlockJobInfo& i) { o.cancelled = true, o.info = i; },
      .error = [&o](const snapshot::BlockJobInfo&, std::string_view, std::string_view) {
        ++o.errors;
      }};
}

Task<void> wait_done(const Outcome& o, std::chrono::milliseconds limit = 30000ms) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!o.done() && std::chrono::steady_clock::now() < end) co_await sleep_for(2ms);
}

// Starts a commit job and runs it to its end on a private event loop.
void commit_to_end(const std::shared_ptr<cow::BackingChain>& chain,
                   const snapshot::CommitJobOptions& options, Outcome& out) {
  run([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto job = snapshot::CommitJob::create(ex, chain, options, events_into(out));
    REQUIRE(job);
    (*job)->start();
    co_await wait_done(out);
  }());
}

}  // namespace

TEST_CASE("commit: the issue's chain, cow.qcow2 into master.img while the guest writes") {
  IssueChain q;
  auto chain = q.open();
  auto model = q.before;
  Outcome out;
  uint64_t concurrent_writes = 0, writes_during_job = 0;
  run([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    std::string why;
    auto job = snapshot::CommitJob::create(
        ex, chain,
        {.job_id = "c1", .device = "disk0", .top = "cow.qcow2", .base = q.master, .step = 64 * 1024},
        events_into(out), &why);
    INFO(why);
    REQUIRE(job);
    CHECK((*job)->info().status == snapshot::BlockJobStatus::created);
    (*job)->start();
    // The guest: random writes of 1..40 KiB through the chain's device.
    std::mt19937 rng(42);
    auto dev = chain->device();
    for (int i = 0; i < 400 || !out.done(); ++i) {
      const uint64_t len = 512 * (1 + rng() % 80);
      const uint64_t off = (rng() % ((kSize - len) / 512)) * 512;
      auto data = pattern(len, uint32_t(i + 1000));
      auto ec = co_await dev->write(off, data, {});
      REQUIRE(!ec);
      std::copy(data.begin(), data.end(), model.begin() + std::ptrdiff_t(off));
      ++concurrent_writes;
      if (!out.done()) ++writes_during_job;
      if (i % 8 == 0) {
        std::vector<std::byte> back(len);
        auto rec = co_await dev->read(off, back);
        REQUIRE(!rec);
        REQUIRE(back == data);
      }
      if (i > 5000) break;
    }
    co_await wait_done(out);
    auto fec = co_await dev->flush();
    REQUIRE(!fec);
  }());
  REQUIRE(out.completed);
  CHECK(out.info.error.empty());
  CHECK(out.errors == 0);
  CHECK(out.info.offset == kSize);
  CHECK(out.info.len == kSize);
  CHECK(out.info.status == snapshot::BlockJobStatus::concluded);
  MESSAGE("guest writes while the job ran: " << writes_during_job);
  CHECK(writes_during_job > 0);

  auto ls = chain->layers();
  REQUIRE(ls.size() == 2);
  CHECK(ls[0].path == q.newcow);
  CHECK(ls[1].path == q.master);
  CHECK(ls[1].read_only);
  CHECK(ls[0].backing_name == "master.img");
  CHECK(ls[0].backing_format == "raw");
  CHECK(!chain->job());
  CHECK(read_all(*chain->device()) == model);
  // master.img now holds what cow.qcow2 showed; cow.qcow2 is still on disk.
  CHECK(read_file(q.master) == q.cow_before);
  CHECK(std::filesystem::exists(q.cow));
  chain.reset();

  auto [irc, info] = shell(fmt::format("qemu-img info --backing-chain '{}'", q.newcow));
  INFO(info);
  CHECK(irc == 0);
  CHECK(info.find("backing file: master.img") != std::string::npos);
  CHECK(info.find("backing file format: raw") != std::string::npos);
  CHECK(info.find("/cow.qcow2\n") == std::string::npos);
  CHECK(info.find("image: " + q.master) != std::string::npos);
  auto [crc, check] = shell(fmt::format("qemu-img check '{}'", q.newcow));
  INFO(check);
  CHECK(crc == 0);
  CHECK(q.flat(q.newcow) == model);
  // And fleece reopens the shortened chain the same.
  auto again = q.open();
  CHECK(again->length() == 2);
  CHECK(read_all(*again->device()) == model);
}

TEST_CASE("commit: refusals") {
  IssueChain q;
  auto chain = q.open();
  run([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    std::string why;
    auto active = snapshot::CommitJob::create(ex, chain, {.job_id = "j", .top = q.newcow}, {}, &why);
    CHECK(!active);
    CHECK(why.find("Top image as the active layer is currently unsupported") != std::string::npos);
    why.clear();
    CHECK(!snapshot::CommitJob::create(ex, chain, {.job_id = "j"}, {}, &why));
    CHECK(why.find("active layer") != std::string::npos);
    CHECK(!snapshot::CommitJob::create(ex, chain, {.job_id = "j", .top = "nope.qcow2"}, {}, &why));
    CHECK(why.find("nope.qcow2 not found") != std::string::npos);
    CHECK(!snapshot::CommitJob::create(ex, chain,
                                       {.job_id = "j", .top = q.master, .base = q.cow}, {}, &why));
    CHECK(why.find("not below") != std::string::npos);
    CHECK(!snapshot::CommitJob::create(ex, chain, {.job_id = "j", .top = q.cow, .base = q.cow},
                                       {}, &why));
    CHECK(why.find("same image") != std::string::npos);
    CHECK(!snapshot::CommitJob::create(ex, chain, {.job_id = "j", .top = q.cow, .base = "x.img"},
                                       {}, &why));
    CHECK(why.find("x.img not found") != std::string::npos);

    // One job per chain: the second is refused until the first has ended.
    Outcome o1;
    auto first = snapshot::CommitJob::create(
        ex, chain, {.job_id = "first", .top = q.cow, .speed = 1 * kMiB}, events_into(o1), &why);
    REQUIRE(first);
    (*first)->start();
    auto second = snapshot::CommitJob::create(ex, chain, {.job_id = "second", .top = q.cow}, {},
                                              &why);
    CHECK(!second);
    CHECK(why.find("busy") != std::string::npos);
    CHECK(why.find("first") != std::string::npos);
    (*first)->cancel();
    co_await wait_done(o1);
    CHECK(o1.cancelled);
    auto third = snapshot::CommitJob::create(ex, chain, {.job_id = "third", .top = q.cow}, {},
                                             &why);
    CHECK(third);
  }());
}

TEST_CASE("commit: cancel mid-way leaves a valid chain with the same content") {
  IssueChain q;
  auto chain = q.open();
  Outcome out;
  run([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto job = snapshot::CommitJob::create(
        ex, chain, {.job_id = "c", .top = q.cow, .speed = 4 * kMiB, .step = 256 * 1024},
        events_into(out));
    REQUIRE(job);
    (*job)->start();
    while ((*job)->info().offset < 2 * kMiB) co_await sleep_for(5ms);
    (*job)->cancel();
    co_await wait_done(out);
  }());
  REQUIRE(out.cancelled);
  CHECK(!out.completed);
  CHECK(out.info.offset > 0);
  CHECK(out.info.offset < kSize);
  auto ls = chain->layers();
  REQUIRE(ls.size() == 3);
  CHECK(ls[2].read_only);
  CHECK(ls[2].device->capabilities().read_only);
  CHECK(read_all(*chain->device()) == q.before);
  CHECK(!chain->job());
  // base got some of the data (still shadowed above).
  CHECK(read_file(q.master) != q.master_before);
  chain.reset();
  CHECK(q.flat(q.newcow) == q.before);
  CHECK(q.flat(q.cow) == q.cow_before);
  auto [crc, check] = shell(fmt::format("qemu-img check '{}' && qemu-img check '{}'", q.newcow,
                                        q.cow));
  INFO(check);
  CHECK(crc == 0);
}

TEST_CASE("commit: speed is held, changes while running, and pause/resume") {
  // cow.qcow2 holds 4 MiB of data: 2 MiB/s takes about 2 s.
  TempDir dir;
  log::set_level(log::Level::error);
  const auto p = dir.path.string();
  sh_ok(fmt::format("cd '{}' && qemu-img create -q -f raw m.img 8M && "
                    "qemu-img create -q -f qcow2 -b m.img -F raw c.qcow2 && "
                    "qemu-io -c 'write -P 7 0 4M' c.qcow2 && "
                    "qemu-img create -q -f qcow2 -b c.qcow2 -F qcow2 n.qcow2",
                    p));
  auto open = [&] {
    auto c = run(cow::BackingChain::open(dir.file("n.qcow2"), "qcow2"));
    REQUIRE(c);
    return *c;
  };
  SUBCASE("rate") {
    auto chain = open();
    Outcome out;
    double seconds = 0;
    run([&]() -> Task<void> {
      auto ex = co_await asio::this_coro::executor;
      auto job = snapshot::CommitJob::create(
          ex, chain, {.job_id = "r", .top = "c.qcow2", .speed = 2 * kMiB, .step = 256 * 1024},
          events_into(out));
      REQUIRE(job);
      const auto t0 = std::chrono::steady_clock::now();
      (*job)->start();
      co_await sleep_for(500ms);
      const auto mid = (*job)->info();
      CHECK(mid.speed == 2 * kMiB);
      // About 1 MiB after half a second (the first step is free).
      CHECK(mid.offset >= 512 * 1024);
      CHECK(mid.offset <= 2 * kMiB);
      co_await wait_done(out);
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }());
    REQUIRE(out.completed);
    MESSAGE("4 MiB at 2 MiB/s took " << seconds << " s");
    CHECK(seconds > 1.5);
    CHECK(seconds < 3.0);
  }
  SUBCASE("set_speed while running") {
    auto chain = open();
    Outcome out;
    run([&]() -> Task<void> {
      auto ex = co_await asio::this_coro::executor;
      auto job = snapshot::CommitJob::create(
          ex, chain, {.job_id = "s", .top = "c.qcow2", .speed = 256 * 1024, .step = 256 * 1024},
          events_into(out));
      REQUIRE(job);
      const auto t0 = std::chrono::steady_clock::now();
      (*job)->start();
      co_await sleep_for(300ms);
      CHECK(!out.done());  // 16 s at this speed
      (*job)->set_speed(0);
      CHECK((*job)->info().speed == 0);
      co_await wait_done(out);
      CHECK(std::chrono::steady_clock::now() - t0 < 3s);
    }());
    CHECK(out.completed);
  }
  SUBCASE("pause and resume") {
    auto chain = open();
    Outcome out;
    run([&]() -> Task<void> {
      auto ex = co_await asio::this_coro::executor;
      auto job = snapshot::CommitJob::create(
          ex, chain, {.job_id = "p", .top = "c.qcow2", .speed = 4 * kMiB, .step = 256 * 1024},
          events_into(out));
      REQUIRE(job);
      (*job)->start();
      co_await sleep_for(100ms);
      (*job)->pause();
      co_await sleep_for(100ms);
      auto a = (*job)->info();
      CHECK(a.paused);
      CHECK(a.status == snapshot::BlockJobStatus::paused);
      CHECK(!a.busy);
      co_await sleep_for(300ms);
      auto b = (*job)->info();
      CHECK(b.offset == a.offset);
      CHECK(b.offset < 4 * kMiB);
      CHECK(!out.done());
      (*job)->resume();
      co_await sleep_for(20ms);
      CHECK((*job)->info().status == snapshot::BlockJobStatus::running);
      CHECK(!(*job)->info().paused);
      co_await wait_done(out);
    }());
    CHECK(out.completed);
    CHECK(chain->length() == 2);
    std::vector<std::byte> first(4 * kMiB);
    REQUIRE(!run(chain->device()->read(0, first)));
    CHECK(first == filled(4 * kMiB, 7));
  }
  SUBCASE("cancel while paused") {
    auto chain = open();
    Outcome out;
    run([&]() -> Task<void> {
      auto ex = co_await asio::this_coro::executor;
      auto job = snapshot::CommitJob::create(
          ex, chain, {.job_id = "pc", .top = "c.qcow2", .speed = 1 * kMiB}, events_into(out));
      REQUIRE(job);
      (*job)->start();
      (*job)->pause();
      co_await sleep_for(50ms);
      (*job)->cancel();
      co_await wait_done(out, 2000ms);
    }());
    CHECK(out.cancelled);
    CHECK(chain->length() == 3);
  }
}

TEST_CASE("commit: a smaller raw base is grown") {
  IssueChain q(4 * kMiB);  // master.img 4 MiB under an 8 MiB chain
  auto chain = q.open();
  Outcome out;
  commit_to_end(chain, {.job_id = "g", .top = q.cow}, out);
  REQUIRE(out.completed);
  CHECK(out.info.error.empty());
  CHECK(std::filesystem::file_size(q.master) == kSize);
  CHECK(read_all(*chain->device()) == q.before);
  chain.reset();
  CHECK(q.flat(q.newcow) == q.before);
}

TEST_CASE("commit: a middle layer of four into a qcow2 base, written by an intermediate overlay") {
  // b.qcow2 <- m1.qcow2 <- m2.qcow2 <- t.qcow2 (active); commit m1 into b:
  // the overlay above top (m2) is read-only and its header is rewritten.
  TempDir dir;
  log::set_level(log::Level::error);
  const auto p = dir.path.string();
  sh_ok(fmt::format(
      "cd '{}' && qemu-img create -q -f qcow2 b.qcow2 4M && qemu-io -c 'write -P 1 0 2M' b.qcow2"
      " && qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 m1.qcow2"
      " && qemu-io -c 'write -P 2 1M 1M' -c 'write -z 3M 64k' m1.qcow2"
      " && qemu-img create -q -f qcow2 -b m1.qcow2 -F qcow2 m2.qcow2"
      " && qemu-io -c 'write -P 3 1536k 64k' m2.qcow2"
      " && qemu-img create -q -f qcow2 -b m2.qcow2 -F qcow2 t.qcow2"
      " && qemu-io -c 'write -P 4 0 64k' t.qcow2"
      " && qemu-img convert -O raw t.qcow2 before.raw",
      p));
  const auto before = read_file(dir.file("before.raw"));
  auto c = run(cow::BackingChain::open(dir.file("t.qcow2"), "qcow2"));
  REQUIRE(c);
  auto chain = *c;
  Outcome out;
  commit_to_end(chain, {.job_id = "m", .top = "m1.qcow2", .base = "b.qcow2"}, out);
  REQUIRE(out.completed);
  CHECK(out.info.error.empty());
  auto ls = chain->layers();
  REQUIRE(ls.size() == 3);
  CHECK(ls[1].path == dir.file("m2.qcow2"));
  CHECK(ls[1].read_only);
  CHECK(ls[2].path == dir.file("b.qcow2"));
  CHECK(read_all(*chain->device()) == before);
  chain.reset();
  sh_ok(fmt::format("cd '{}' && qemu-img check m2.qcow2 && qemu-img check b.qcow2 && "
                    "qemu-img convert -O raw t.qcow2 after.raw",
                    p));
  CHECK(read_file(dir.file("after.raw")) == before);
  auto [irc, info] = shell(fmt::format("qemu-img info '{}'", dir.file("m2.qcow2")));
  CHECK(info.find("backing file: b.qcow2") != std::string::npos);
}
