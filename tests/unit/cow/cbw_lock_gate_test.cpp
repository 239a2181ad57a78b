// RangeLock (as copy-before-write uses it) and WriteGate: ownership,
// fairness, draining.
#include "cow/range_lock.hpp"
#include "cow/write_gate.hpp"
#include "tests/unit/cow/cbw_test_support.hpp"

#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <array>
#include <string>
#include <thread>

using namespace fleece;
using namespace fleece::cbwtest;
using std::chrono::microseconds;

namespace {
constexpr bool kShared = true;
constexpr bool kExclusive = false;
}  // namespace

TEST_CASE("cluster lock: shared holders exclude a writer, which then excludes readers") {
  cow::RangeLock locks;
  std::string trace;
  Latch writer_may_finish;
  run([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto r1 = co_await locks.lock(7, 7, kShared);
    auto r2 = co_await locks.lock(7, 7, kShared);  // shared: no wait
    CHECK(locks.shared_holders(7) == 2);
    asio::co_spawn(ex, [&]() -> Task<void> {
      auto w = co_await locks.lock(7, 7, kExclusive);
      trace += "W";
      co_await writer_may_finish.wait();
      trace += "w";
    }, asio::detached);
    co_await settle();
    // A reader arriving after the queued writer waits behind it (fairness).
    asio::co_spawn(ex, [&]() -> Task<void> {
      auto r = co_await locks.lock(7, 7, kShared);
      trace += "R";
    }, asio::detached);
    co_await settle();
    CHECK(trace.empty());
    r1.release();
    co_await settle();
    CHECK(trace.empty());  // one reader still holds it
    r2.release();
    co_await settle();
    CHECK(trace == "W");
    writer_may_finish.open();
    co_await settle();
    CHECK(trace == "WwR");
    // Other clusters are independent.
    auto a = co_await locks.lock(1, 1, kExclusive);
    auto b = co_await locks.lock(2, 2, kExclusive);
    CHECK(locks.held_count() == 2);
  });
  CHECK(locks.held_count() == 0);
}

TEST_CASE("cluster lock: a shared range is one entry, taken whole; writers outside it pass") {
  cow::RangeLock locks;
  std::string trace;
  Latch writer_may_finish;
  run([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto reader = co_await locks.lock(0, 511, kShared);  // a 2 MiB read of 4 KiB units
    CHECK(locks.held_count() == 1);
    CHECK(locks.shared_holders(0) == 1);
    CHECK(locks.shared_holders(511) == 1);
    CHECK(locks.shared_holders(512) == 0);
    auto outside = co_await locks.lock(512, 512, kExclusive);  // no overlap: no wait
    outside.release();
    // A writer on a unit inside the range waits for the reader.
    asio::co_spawn(ex, [&]() -> Task<void> {
      auto w = co_await locks.lock(300, 300, kExclusive);
      trace += "W";
      co_await writer_may_finish.wait();
      trace += "w";
    }, asio::detached);
    co_await settle();
    CHECK(trace.empty());
    // A second reader over the writer's unit queues behind it (fairness).
    asio::co_spawn(ex, [&]() -> Task<void> {
      auto r = co_await locks.lock(0, 300, kShared);
      trace += "R";
    }, asio::detached);
    co_await settle();
    CHECK(locks.waiter_count() == 2);
    std::vector<uint64_t> active;  // only the waiting writer's unit: readers change nothing
    locks.exclusive_in(298, 303, &active);
    CHECK(active == std::vector<uint64_t>{300});
    active.clear();
    locks.exclusive_in(600, 700, &active);
    CHECK(active.empty());
    reader.release();
    co_await settle();
    CHECK(trace == "W");
    // A writer on unit 0, free now, still waits behind the queued reader
    // of [0, 300] it conflicts with, rather than overtake it.
    bool zero_done = false;
    asio::co_spawn(ex, [&]() -> Task<void> {
      auto z = co_await locks.lock(0, 0, kExclusive);
      zero_done = true;
    }, asio::detached);
    co_await settle();
    CHECK_FALSE(zero_done);
    writer_may_finish.open();
    co_await settle();
    CHECK(trace == "WwR");
    CHECK(zero_done);
  });
  CHECK(locks.held_count() == 0);
  CHECK(locks.waiter_count() == 0);
}

TEST_CASE("cluster lock: many coroutines on two threads never overlap an exclusive holder") {
  cow::RangeLock locks;
  asio::io_context io;
  std::atomic<int> inside{0}, readers{0};
  std::atomic<bool> overlap{false};
  std::atomic<int> done{0};
  for (int i = 0; i < 64; ++i) {
    asio::co_spawn(io, [&, i]() -> Task<void> {
      for (int k = 0; k < 50; ++k) {
        uint64_t c = (i + k) % 3;
        if ((i + k) % 4 == 0) {
          auto g = co_await locks.lock(c, c, kExclusive);
          if (c == 0 && (inside.fetch_add(1) != 0 || readers.load() != 0)) overlap = true;
          co_await sleep_for(microseconds(5));
          if (c == 0) inside.fetch_sub(1);
        } else {
          auto g = co_await locks.lock(c, c, kShared);
          if (c == 0) {
            readers.fetch_add(1);
            if (inside.load() != 0) overlap = true;
          }
          co_await sleep_for(microseconds(5));
          if (c == 0) readers.fetch_sub(1);
        }
      }
      ++done;
    }, asio::detached);
  }
  std::thread t([&] { io.run(); });
  io.run();
  t.join();
  CHECK(done == 64);
  CHECK_FALSE(overlap.load());
  CHECK(locks.held_count() == 0);
}

TEST_CASE("cluster lock: random shared ranges and exclusive units on two threads never overlap") {
  // Per unit: writers inside (must stay 0 or 1, and 0 while readers are).
  constexpr uint64_t kUnits = 32;
  cow::RangeLock locks;
  asio::io_context io;
  std::array<std::atomic<int>, kUnits> writers{}, readers{};
  std::atomic<bool> overlap{false};
  std::atomic<int> done{0};
  for (int i = 0; i < 48; ++i) {
    asio::co_spawn(io, [&, i]() -> Task<void> {
      uint64_t state = 0x9e3779b97f4a7c15ull * (i + 1);
      auto next = [&] { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state; };
      for (int k = 0; k < 200; ++k) {
        if (next() % 3 == 0) {
          const uint64_t c = next() % kUnits;
          auto g = co_await locks.lock(c, c, kExclusive);
          if (writers[c].fetch_add(1) != 0 || readers[c].load() != 0) overlap = true;
          co_await sleep_for(microseconds(next() % 4));
          writers[c].fetch_sub(1);
        } else {
          const uint64_t a = next() % kUnits, b = std::min(kUnits - 1, a + next() % 12);
          auto g = co_await locks.lock(a, b, kShared);
          for (uint64_t c = a; c <= b; ++c) {
            readers[c].fetch_add(1);
            if (writers[c].load() != 0) overlap = true;
          }
          co_await sleep_for(microseconds(next() % 4));
          for (uint64_t c = a; c <= b; ++c) readers[c].fetch_sub(1);
        }
      }
      ++done;
    }, asio::detached);
  }
  std::thread t([&] { io.run(); });
  io.run();
  t.join();
  CHECK(done == 48);
  CHECK_FALSE(overlap.load());
  CHECK(locks.held_count() == 0);
  CHECK(locks.waiter_count() == 0);
}

TEST_CASE("write gate: in-flight writers drain before close completes; new ones wait") {
  cow::WriteGate gate;
  std::string trace;
  Latch release_a, release_b, release_c;
  run([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    auto writer = [&](char name, Latch& done) -> Task<void> {
      auto t = co_await gate.enter();
      trace += name;
      co_await done.wait();
      trace += static_cast<char>(name - 'A' + 'a');
    };
    asio::co_spawn(ex, writer('A', release_a), asio::detached);
    asio::co_spawn(ex, writer('B', release_b), asio::detached);
    co_await settle();
    CHECK_MESSAGE(gate.in_flight() == 2, trace);
    bool closed = false;
    asio::co_spawn(ex, [&]() -> Task<void> {
      co_await gate.close();  // completes only once A and B are done
      trace += "|";
      closed = true;
    }, asio::detached);
    co_await settle();
    CHECK_FALSE(closed);
    release_b.open();
    co_await settle();
    CHECK_FALSE(closed);
    release_a.open();
    co_await settle();
    CHECK(closed);
    CHECK(gate.in_flight() == 0);
    asio::co_spawn(ex, writer('C', release_c), asio::detached);
    co_await settle();
    CHECK(gate.waiting() == 1);
    CHECK(gate.in_flight() == 0);
    trace += "|";
    gate.open();
    co_await settle();
    CHECK(gate.in_flight() == 1);
    release_c.open();
    co_await settle();
  });
  CHECK(trace == "ABba||Cc");
}

TEST_CASE("write gate: two closers; the gate opens only after both open") {
  cow::WriteGate gate;
  bool entered = false;
  run([&]() -> Task<void> {
    auto ex = co_await asio::this_coro::executor;
    co_await gate.close();
    co_await gate.close();
    asio::co_spawn(ex, [&]() -> Task<void> {
      auto t = co_await gate.enter();
      entered = true;
    }, asio::detached);
    co_await settle();
    gate.open();
    co_await settle();
    CHECK_FALSE(entered);
    gate.open();
    co_await settle();
    CHECK(entered);
  });
}

TEST_CASE("write gate: a close starts a new epoch; try_enter with an older one fails") {
  cow::WriteGate gate;
  run([&]() -> Task<void> {
    const uint64_t e0 = co_await gate.wait_open();
    {
      auto t = gate.try_enter(e0);
      CHECK(t.valid());
      CHECK(gate.in_flight() == 1);
    }
    CHECK(gate.in_flight() == 0);
    co_await gate.close();
    CHECK_FALSE(gate.try_enter(e0).valid());  // closed
    gate.open();
    CHECK_FALSE(gate.try_enter(e0).valid());  // open again, but a close came between
    CHECK(gate.in_flight() == 0);
    const uint64_t e1 = co_await gate.wait_open();
    CHECK(e1 != e0);
    CHECK(gate.try_enter(e1).valid());
  });
}
