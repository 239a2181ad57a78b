// Test support for copy-before-write: a slow, observable live disk and a
// way to run coroutines to completion in a doctest case.
//
// SlowDisk wraps block::MemoryDevice. With a delay set, every read and
// write is done in two halves with a random pause between them (a seeded
// generator), so a read that overlaps a write sees the tear instead of
// hiding it. hold_reads() parks every read between its halves until
// release_reads(), for hand-made interleavings. It counts reads, so tests
// can prove that holes are recorded without reading the disk.
#pragma once

#include "block/memory_device.hpp"
#include "cow/cbw_resumer.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

namespace fleece::cbwtest {

namespace asio = boost::asio;
using block::Task;

inline Task<void> sleep_for(std::chrono::microseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

// Lets queued handlers run (each pass posts behind what is queued now).
inline Task<void> settle(int passes = 20) {
  for (int i = 0; i < passes; ++i) co_await sleep_for(std::chrono::microseconds(0));
}

// A one-shot event for hand-made interleavings: wait() parks until open().
class Latch {
 public:
  Task<void> wait() {
    co_await cow::suspend([&](cow::Resumer&& r) {
      std::unique_lock lk(mutex_);
      if (open_) {
        lk.unlock();
        r.resume();
        return;
      }
      waiters_.push_back(std::move(r));
    });
  }
  void open() {
    std::vector<cow::Resumer> wake;
    {
      std::lock_guard lk(mutex_);
      open_ = true;
      wake.swap(waiters_);
    }
    for (auto& r : wake) r.resume();
  }
  size_t waiting() const {
    std::lock_guard lk(mutex_);
    return waiters_.size();
  }

 private:
  mutable std::mutex mutex_;
  bool open_ = false;
  std::vector<cow::Resumer> waiters_;
};

class SlowDisk final : public block::Device {
 public:
  explicit SlowDisk(uint64_t size) : mem_(size) {}

  void set_delay(std::chrono::microseconds lo, std::chrono::microseconds hi, uint64_t seed) {
    std::lock_guard lk(mutex_);
    lo_ = lo;
    hi_ = hi;
    rng_.seed(seed);
  }
  void hold_reads(bool hold) {
    std::vector<cow::Resumer> wake;
    {
      std::lock_guard lk(mutex_);
      hold_ = hold;
      if (!hold) wake.swap(held_);
    }
    for (auto& r : wake) r.resume();
  }
  size_t held_reads() const {
    std::lock_guard lk(mutex_);
    return held_.size();
  }
  // Called when a write, write_zeroes or trim has reached the memory device
  // (data empty: the range now reads as zeroes), before it completes.
  std::function<void(uint64_t, uint64_t, std::span<const std::byte>)> after_write;

  uint64_t reads() const { return reads_.load(); }
  uint64_t writes() const { return writes_.load(); }
  std::vector<std::byte> contents() const { return mem_.contents(0, mem_.size()); }
  block::MemoryDevice& memory() { return mem_; }

  uint64_t size() const override { return mem_.size(); }
  block::Capabilities capabilities() const override { return mem_.capabilities(); }

  Task<std::error_code> read(uint64_t offset, std::span<std::byte> out) override {
    ++reads_;
    const size_t half = out.size() / 2;
    co_await pause();
    if (auto ec = co_await mem_.read(offset, out.first(half))) co_return ec;
    co_await park();
    co_await pause();
    co_return co_await mem_.read(offset + half, out.subspan(half));
  }
  Task<std::error_code> write(uint64_t offset, std::span<const std::byte> data,
                              block::WriteFlags flags) override {
    ++writes_;
    const size_t half = data.size() / 2;
    co_await pause();
    if (half)
      if (auto ec = co_await mem_.write(offset, data.first(half), flags)) co_return ec;
    co_await pause();
    auto ec = co_await mem_.write(offset + half, data.subspan(half), flags);
    if (!ec && after_write) after_write(offset, data.size(), data);
    co_return ec;
  }
  Task<std::error_code> write_zeroes(uint64_t offset, uint64_t length,
                                     block::ZeroFlags flags) override {
    ++writes_;
    co_await pause();
    auto ec = co_await mem_.write_zeroes(offset, length, flags);
    if (!ec && after_write) after_write(offset, length, {});
    co_return ec;
  }
  Task<std::error_code> trim(uint64_t offset, uint64_t length, block::WriteFlags flags) override {
    ++writes_;
    co_await pause();
    auto ec = co_await mem_.trim(offset, length, flags);
    if (!ec && after_write) after_write(offset, length, {});
    co_return ec;
  }
  Task<std::error_code> flush() override { co_return co_await mem_.flush(); }
  Task<std::error_code> block_status(uint64_t offset, uint64_t length,
                                     std::vector<block::Extent>& out) override {
    co_return co_await mem_.block_status(offset, length, out);
  }

 private:
  Task<void> pause() {
    std::chrono::microseconds d{0};
    {
      std::lock_guard lk(mutex_);
      if (hi_.count() > 0) d = std::chrono::microseconds(
          std::uniform_int_distribution<int64_t>(lo_.count(), hi_.count())(rng_));
    }
    if (d.count() > 0) co_await sleep_for(d);
  }
  Task<void> park() {
    co_await cow::suspend([&](cow::Resumer&& r) {
      std::unique_lock lk(mutex_);
      if (!hold_) {
        lk.unlock();
        r.resume();
        return;
      }
      held_.push_back(std::move(r));
    });
  }

  block::MemoryDevice mem_;
  mutable std::mutex mutex_;
  std::chrono::microseconds lo_{0}, hi_{0};
  std::mt19937_64 rng_;
  bool hold_ = false;
  std::vector<cow::Resumer> held_;
  std::atomic<uint64_t> reads_{0}, writes_{0};
};

// Runs the coroutine made by make() on a fresh io_context until everything
// queued has finished; rethrows what it threw.
template <class Make>
void run(Make&& make) {
  asio::io_context io;
  std::exception_ptr failure;
  asio::co_spawn(io, make(), [&](std::exception_ptr e) { failure = e; });
  io.run();
  if (failure) std::rethrow_exception(failure);
}

inline std::vector<std::byte> pattern(size_t n, uint64_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937_64 g(seed);
  for (auto& b : v) b = static_cast<std::byte>(g() & 0xff);
  return v;
}

inline std::span<const std::byte> cspan(const std::vector<std::byte>& v) { return {v.data(), v.size()}; }

}  // namespace fleece::cbwtest
