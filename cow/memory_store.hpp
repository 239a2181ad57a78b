// MemoryStore: a ClusterStore held in memory, for tests of copy-before-write.
//
// Fault injection and timing: fail_next_writes(n, ec) makes the next n
// write_cluster / mark_zero calls fail, fail_randomly() some of them; set_write_delay(lo, hi) makes every
// write_cluster / mark_zero / discard / read wait a random time in [lo, hi]
// (a seeded generator, so a failing interleaving can be replayed);
// set_hold(true) parks every write_cluster until set_hold(false), which lets
// a test keep a copy in flight as long as it wants; hold_reads() does the
// same for reads.
// Counters record what the filter asked for, so tests can prove "one copy
// per first write" and "holes are recorded without reading".
#pragma once

#include "cow/cbw_resumer.hpp"
#include "cow/cluster_store.hpp"

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <random>
#include <vector>

namespace fleece::cow {

class MemoryStore final : public ClusterStore {
 public:
  MemoryStore(uint64_t size, uint32_t cluster_size, std::string name = "memory-store");

  uint64_t size() const override { return size_; }
  uint32_t cluster_size() const override { return cluster_size_; }
  ClusterState state(uint64_t cluster) const override;
  uint64_t stored_bytes() const override;
  std::string path() const override { return name_; }
  std::string format() const override { return "memory"; }

  boost::asio::awaitable<std::error_code> read(uint64_t cluster, uint32_t offset,
                                               std::span<std::byte> out) override;
  boost::asio::awaitable<std::error_code> write_cluster(uint64_t cluster,
                                                        std::span<const std::byte> data) override;
  boost::asio::awaitable<std::error_code> mark_zero(uint64_t cluster) override;
  boost::asio::awaitable<std::error_code> discard(uint64_t cluster) override;
  boost::asio::awaitable<std::error_code> flush() override;
  boost::asio::awaitable<std::error_code> set_backing(const std::string& file,
                                                      const std::string& format) override;

  // Fault injection and timing.
  void fail_next_writes(int n, std::error_code ec = std::make_error_code(std::errc::io_error));
  // Each later write_cluster / mark_zero fails with EIO with probability
  // 1/one_in (0: never), drawn from the delay generator.
  void fail_randomly(uint32_t one_in);
  void set_write_delay(std::chrono::microseconds lo, std::chrono::microseconds hi,
                       uint64_t seed = 1);
  void set_hold(bool hold);        // parks write_cluster calls
  void hold_reads(bool hold);      // parks read calls

  // Observations.
  std::string backing() const;
  uint64_t data_writes() const { return data_writes_.load(); }
  uint64_t zero_marks() const { return zero_marks_.load(); }
  uint64_t discards() const { return discards_.load(); }
  uint64_t flushes() const { return flushes_.load(); }
  std::vector<std::byte> cluster_data(uint64_t cluster) const;  // empty unless data

 private:
  boost::asio::awaitable<void> maybe_delay();
  std::error_code take_failure();

  const uint64_t size_;
  const uint32_t cluster_size_;
  const std::string name_;

  mutable std::mutex mutex_;
  std::map<uint64_t, std::vector<std::byte>> data_;
  std::vector<ClusterState> states_;
  std::string backing_;
  int fail_count_ = 0;
  uint32_t fail_one_in_ = 0;
  std::error_code fail_error_;
  std::chrono::microseconds delay_lo_{0}, delay_hi_{0};
  std::mt19937_64 rng_;
  bool hold_ = false;
  bool hold_reads_ = false;
  std::vector<Resumer> held_;
  std::vector<Resumer> held_reads_;

  std::atomic<uint64_t> data_writes_{0}, zero_marks_{0}, discards_{0}, flushes_{0};
};

}  // namespace fleece::cow
