#include "cow/memory_store.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include <algorithm>
#include <cstring>

namespace fleece::cow {

MemoryStore::MemoryStore(uint64_t size, uint32_t cluster_size, std::string name)
    : size_(size),
      cluster_size_(cluster_size),
      name_(std::move(name)),
      states_((size + cluster_size - 1) / cluster_size, ClusterState::absent) {}

ClusterState MemoryStore::state(uint64_t cluster) const {
  std::lock_guard lk(mutex_);
  return cluster < states_.size() ? states_[cluster] : ClusterState::absent;
}

uint64_t MemoryStore::stored_bytes() const {
  std::lock_guard lk(mutex_);
  uint64_t n = 0;
  for (auto& [c, bytes] : data_) n += bytes.size();
  return n;
}

std::string MemoryStore::backing() const {
  std::lock_guard lk(mutex_);
  return backing_;
}

std::vector<std::byte> MemoryStore::cluster_data(uint64_t cluster) const {
  std::lock_guard lk(mutex_);
  auto it = data_.find(cluster);
  return it == data_.end() ? std::vector<std::byte>{} : it->second;
}

void MemoryStore::fail_next_writes(int n, std::error_code ec) {
  std::lock_guard lk(mutex_);
  fail_count_ = n;
  fail_error_ = ec;
}

void MemoryStore::set_write_delay(std::chrono::microseconds lo, std::chrono::microseconds hi,
                                  uint64_t seed) {
  std::lock_guard lk(mutex_);
  delay_lo_ = lo;
  delay_hi_ = std::max(lo, hi);
  rng_.seed(seed);
}

void MemoryStore::set_hold(bool hold) {
  std::vector<Resumer> wake;
  {
    std::lock_guard lk(mutex_);
    hold_ = hold;
    if (!hold) wake.swap(held_);
  }
  for (auto& r : wake) r.resume();
}

void MemoryStore::hold_reads(bool hold) {
  std::vector<Resumer> wake;
  {
    std::lock_guard lk(mutex_);
    hold_reads_ = hold;
    if (!hold) wake.swap(held_reads_);
  }
  for (auto& r : wake) r.resume();
}

void MemoryStore::fail_randomly(uint32_t one_in) {
  std::lock_guard lk(mutex_);
  fail_one_in_ = one_in;
}

std::error_code MemoryStore::take_failure() {
  std::lock_guard lk(mutex_);
  if (fail_count_ > 0) {
    --fail_count_;
    return fail_error_;
  }
  if (fail_one_in_ && rng_() % fail_one_in_ == 0) return std::make_error_code(std::errc::io_error);
  return {};
}

boost::asio::awaitable<void> MemoryStore::maybe_delay() {
  std::chrono::microseconds d{0};
  {
    std::lock_guard lk(mutex_);
    if (delay_hi_.count() > 0) {
      std::uniform_int_distribution<int64_t> dist(delay_lo_.count(), delay_hi_.count());
      d = std::chrono::microseconds(dist(rng_));
    }
  }
  if (d.count() > 0) {
    boost::asio::steady_timer t(co_await boost::asio::this_coro::executor, d);
    co_await t.async_wait(boost::asio::use_awaitable);
  }
}

boost::asio::awaitable<std::error_code> MemoryStore::read(uint64_t cluster, uint32_t offset,
                                                          std::span<std::byte> out) {
  co_await maybe_delay();
  co_await suspend([&](Resumer&& r) {
    std::unique_lock lk(mutex_);
    if (!hold_reads_) {
      lk.unlock();
      r.resume();
      return;
    }
    held_reads_.push_back(std::move(r));
  });
  std::lock_guard lk(mutex_);
  if (cluster >= states_.size() || offset + out.size() > cluster_bytes(cluster))
    co_return std::make_error_code(std::errc::invalid_argument);
  auto it = data_.find(cluster);
  if (it == data_.end()) std::fill(out.begin(), out.end(), std::byte{0});
  else std::memcpy(out.data(), it->second.data() + offset, out.size());
  co_return std::error_code{};
}

boost::asio::awaitable<std::error_code> MemoryStore::write_cluster(
    uint64_t cluster, std::span<const std::byte> data) {
  co_await maybe_delay();
  co_await suspend([&](Resumer&& r) {
    std::unique_lock lk(mutex_);
    if (!hold_) {
      lk.unlock();
      r.resume();
      return;
    }
    held_.push_back(std::move(r));
  });
  if (auto ec = take_failure()) co_return ec;
  std::lock_guard lk(mutex_);
  if (cluster >= states_.size() || data.size() != cluster_bytes(cluster))
    co_return std::make_error_code(std::errc::invalid_argument);
  data_[cluster].assign(data.begin(), data.end());
  states_[cluster] = ClusterState::data;
  ++data_writes_;
  co_return std::error_code{};
}

boost::asio::awaitable<std::error_code> MemoryStore::mark_zero(uint64_t cluster) {
  co_await maybe_delay();
  if (auto ec = take_failure()) co_return ec;
  std::lock_guard lk(mutex_);
  if (cluster >= states_.size()) co_return std::make_error_code(std::errc::invalid_argument);
  data_.erase(cluster);
  states_[cluster] = ClusterState::zero;
  ++zero_marks_;
  co_return std::error_code{};
}

boost::asio::awaitable<std::error_code> MemoryStore::discard(uint64_t cluster) {
  co_await maybe_delay();
  std::lock_guard lk(mutex_);
  if (cluster >= states_.size()) co_return std::make_error_code(std::errc::invalid_argument);
  data_.erase(cluster);
  states_[cluster] = ClusterState::zero;
  ++discards_;
  co_return std::error_code{};
}

boost::asio::awaitable<std::error_code> MemoryStore::flush() {
  ++flushes_;
  co_return std::error_code{};
}

boost::asio::awaitable<std::error_code> MemoryStore::set_backing(const std::string& file,
                                                                 const std::string& format) {
  std::lock_guard lk(mutex_);
  backing_ = format.empty() ? file : file + " (" + format + ")";
  co_return std::error_code{};
}

}  // namespace fleece::cow
