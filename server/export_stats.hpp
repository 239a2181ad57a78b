// Per-export counters for query-stats: requests, bytes, in-flight, latency.
//
// Updated lock-free (relaxed atomics) from every shard's request path;
// snapshot() reads them without stopping anybody, so a snapshot is
// approximate across counters but each counter is exact.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

namespace fleece::server {

// Latency histogram: log2 buckets of microseconds, each split in 4 linear
// sub-buckets, so a percentile is within ~25% of the truth from 1 us to
// about an hour.
class LatencyHistogram {
 public:
  static constexpr int kSubBuckets = 4;
  static constexpr int kBuckets = 32 * kSubBuckets;

  void record(uint64_t micros);
  // q in [0, 1]; 0 when nothing was recorded. Upper bound of the bucket.
  uint64_t percentile(double q) const;
  uint64_t count() const;

  static int bucket_of(uint64_t micros);
  static uint64_t bucket_upper(int bucket);

 private:
  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
};

struct ExportStatsSnapshot {
  uint64_t read_requests = 0, read_bytes = 0;
  uint64_t write_requests = 0, write_bytes = 0;
  uint64_t flush_requests = 0, trim_requests = 0, zero_requests = 0;
  uint64_t block_status_requests = 0, cache_requests = 0;
  uint64_t errors = 0;
  uint64_t in_flight = 0;
  uint64_t read_p50_us = 0, read_p99_us = 0;
  uint64_t write_p50_us = 0, write_p99_us = 0;
};

class ExportStats {
 public:
  enum class Op { read, write, flush, trim, zero, block_status, cache, other };

  void begin() { in_flight_.fetch_add(1, std::memory_order_relaxed); }
  // One request finished: bytes moved (READ/WRITE), latency, failed or not.
  void end(Op op, uint64_t bytes, uint64_t micros, bool failed);

  ExportStatsSnapshot snapshot() const;

 private:
  static constexpr auto kRelaxed = std::memory_order_relaxed;
  std::atomic<uint64_t> read_requests_{0}, read_bytes_{0};
  std::atomic<uint64_t> write_requests_{0}, write_bytes_{0};
  std::atomic<uint64_t> flush_{0}, trim_{0}, zero_{0}, block_status_{0}, cache_{0};
  std::atomic<uint64_t> errors_{0};
  std::atomic<uint64_t> in_flight_{0};
  LatencyHistogram read_latency_, write_latency_;
};

}  // namespace fleece::server
