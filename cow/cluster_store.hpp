// ClusterStore: where copy-before-write preserves old clusters of a disk.
//
// One store per snapshot; normally a throwaway qcow2 file whose backing file
// is the next newer store (or the live disk), so qemu-img reading it sees
// the snapshot. The copy-before-write filter only ever asks for whole
// clusters; it owns the decision of what goes where and keeps its own
// bitmaps, so a store is a plain cluster container.
//
// Contract
//  * size() is the virtual size (the disk's); cluster c covers bytes
//    [c * cluster_size(), min(size(), (c + 1) * cluster_size())). The last
//    cluster may be short: write_cluster() then takes exactly its bytes.
//  * state(c) is cheap (in memory): absent (falls through to the backing
//    file), zero (allocated as zeroes, qcow2's zero flag) or data.
//  * read(c, offset, out) reads within one cluster; absent clusters read as
//    zeroes here (the filter never reads a cluster the store lacks).
//  * write_cluster / mark_zero / discard change one cluster; discard turns
//    it into a zero cluster and frees its data (never back to absent, so a
//    qcow2 reader cannot fall through to newer data).
//  * stored_bytes() counts data clusters' bytes (space the store uses for
//    preserved data; metadata is not counted).
//  * set_backing(file, format) rewrites the image's backing-file link.
//    Unallocated clusters read the same before and after (the filter only
//    re-points along the chain).
//  * Concurrent calls for different clusters are allowed; the filter never
//    issues two concurrent changes to the same cluster.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <system_error>

namespace fleece::cow {

enum class ClusterState : uint8_t { absent, zero, data };

class ClusterStore {
 public:
  virtual ~ClusterStore() = default;

  virtual uint64_t size() const = 0;
  virtual uint32_t cluster_size() const = 0;
  virtual ClusterState state(uint64_t cluster) const = 0;
  virtual uint64_t stored_bytes() const = 0;
  virtual std::string path() const = 0;    // what a backing-file link names
  virtual std::string format() const = 0;  // "qcow2", "memory", ...

  virtual boost::asio::awaitable<std::error_code> read(uint64_t cluster, uint32_t offset,
                                                       std::span<std::byte> out) = 0;
  virtual boost::asio::awaitable<std::error_code> write_cluster(
      uint64_t cluster, std::span<const std::byte> data) = 0;
  virtual boost::asio::awaitable<std::error_code> mark_zero(uint64_t cluster) = 0;
  virtual boost::asio::awaitable<std::error_code> discard(uint64_t cluster) = 0;
  virtual boost::asio::awaitable<std::error_code> flush() = 0;
  virtual boost::asio::awaitable<std::error_code> set_backing(const std::string& file,
                                                              const std::string& format) = 0;

  // Whether every cluster is absent; false may also mean "cannot tell
  // cheaply" (the default asks state() of every cluster).
  virtual bool all_absent() const {
    for (uint64_t c = 0, n = cluster_count(); c < n; ++c)
      if (state(c) != ClusterState::absent) return false;
    return true;
  }

  uint64_t cluster_count() const { return (size() + cluster_size() - 1) / cluster_size(); }
  uint32_t cluster_bytes(uint64_t cluster) const {
    uint64_t start = cluster * cluster_size();
    return static_cast<uint32_t>(std::min<uint64_t>(cluster_size(), size() - start));
  }
};

}  // namespace fleece::cow
