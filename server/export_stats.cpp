#include "server/export_stats.hpp"

#include <bit>

namespace fleece::server {

int LatencyHistogram::bucket_of(uint64_t micros) {
  if (micros < kSubBuckets) return int(micros);  // exact for 0..3 us
  int log = 63 - std::countl_zero(micros);       // >= 2
  int sub = int((micros >> (log - 2)) & (kSubBuckets - 1));
  int bucket = (log - 1) * kSubBuckets + sub;
  return bucket < kBuckets ? bucket : kBuckets - 1;
}

uint64_t LatencyHistogram::bucket_upper(int bucket) {
  if (bucket < 2 * kSubBuckets) {
    if (bucket < kSubBuckets) return uint64_t(bucket);
  }
  int log = bucket / kSubBuckets + 1;
  int sub = bucket % kSubBuckets;
  uint64_t base = uint64_t(1) << log;
  uint64_t step = base / kSubBuckets;
  return base + step * uint64_t(sub + 1) - 1;
}

void LatencyHistogram::record(uint64_t micros) {
  buckets_[size_t(bucket_of(micros))].fetch_add(1, std::memory_order_relaxed);
}

uint64_t LatencyHistogram::count() const {
  uint64_t n = 0;
  for (const auto& b : buckets_) n += b.load(std::memory_order_relaxed);
  return n;
}

uint64_t LatencyHistogram::percentile(double q) const {
  uint64_t total = count();
  if (total == 0) return 0;
  uint64_t rank = uint64_t(q * double(total));
  if (rank >= total) rank = total - 1;
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += buckets_[size_t(i)].load(std::memory_order_relaxed);
    if (seen > rank) return bucket_upper(i);
  }
  return bucket_upper(kBuckets - 1);
}

void ExportStats::end(Op op, uint64_t bytes, uint64_t micros, bool failed) {
  in_flight_.fetch_sub(1, kRelaxed);
  if (failed) errors_.fetch_add(1, kRelaxed);
  switch (op) {
    case Op::read:
      read_requests_.fetch_add(1, kRelaxed);
      if (!failed) read_bytes_.fetch_add(bytes, kRelaxed);
      read_latency_.record(micros);
      break;
    case Op::write:
      write_requests_.fetch_add(1, kRelaxed);
      if (!failed) write_bytes_.fetch_add(bytes, kRelaxed);
      write_latency_.record(micros);
      break;
    case Op::flush: flush_.fetch_add(1, kRelaxed); break;
    case Op::trim: trim_.fetch_add(1, kRelaxed); break;
    case Op::zero: zero_.fetch_add(1, kRelaxed); break;
    case Op::block_status: block_status_.fetch_add(1, kRelaxed); break;
    case Op::cache: cache_.fetch_add(1, kRelaxed); break;
    case Op::other: break;
  }
}

ExportStatsSnapshot ExportStats::snapshot() const {
  ExportStatsSnapshot s;
  s.read_requests = read_requests_.load(kRelaxed);
  s.read_bytes = read_bytes_.load(kRelaxed);
  s.write_requests = write_requests_.load(kRelaxed);
  s.write_bytes = write_bytes_.load(kRelaxed);
  s.flush_requests = flush_.load(kRelaxed);
  s.trim_requests = trim_.load(kRelaxed);
  s.zero_requests = zero_.load(kRelaxed);
  s.block_status_requests = block_status_.load(kRelaxed);
  s.cache_requests = cache_.load(kRelaxed);
  s.errors = errors_.load(kRelaxed);
  s.in_flight = in_flight_.load(kRelaxed);
  s.read_p50_us = read_latency_.percentile(0.50);
  s.read_p99_us = read_latency_.percentile(0.99);
  s.write_p50_us = write_latency_.percentile(0.50);
  s.write_p99_us = write_latency_.percentile(0.99);
  return s;
}

}  // namespace fleece::server
