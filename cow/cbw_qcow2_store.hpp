// Qcow2ClusterStore: a ClusterStore over a Qcow2Image, the throwaway qcow2
// a fleece keeps preserved clusters in.
//
// The store's cluster (the copy unit, "granularity") may be smaller than
// the qcow2 cluster: then the image uses extended L2 entries and a copy
// unit is a run of subclusters. A guest's 4 KiB first write then copies
// 4 KiB, not 64 KiB, while the L2 tables stay those of 64 KiB clusters
// (16 bytes per 64 KiB of disk, against 8 per 4 KiB with 4 KiB clusters).
// QEMU reads such files (qemu-img info/check/convert) since 5.2.
//
// The image is created fresh (create()) with the snapshot's disk as its
// backing file, so every L2 table lives in memory and state() is answered
// from the mapping cache without I/O. Operations map one to one onto the
// image's subcluster API: write_cluster -> write_subclusters, mark_zero ->
// zero_subclusters, discard -> discard_subclusters (zeroes; the host
// cluster is freed once none of it is allocated), stored_bytes ->
// data_bytes_in_use. set_backing() rewrites the header's backing link and
// flushes it, so qemu-img sees the chain the filter uses; what the image's
// own Device reads for unallocated clusters is left alone (the filter never
// reads a cluster a store lacks). Deleting the file is the owner's job.
#pragma once

#include "cow/cluster_store.hpp"
#include "cow/qcow2_image.hpp"
#include "util/result.hpp"

#include <memory>
#include <string>

namespace fleece::cow {

class Qcow2ClusterStore final : public ClusterStore {
 public:
  // Formats `file` as a qcow2 of `size` bytes backed by backing_file, with
  // qcow2 clusters of cluster_size and copy units of granularity (a power
  // of two from cluster_size / 32 to cluster_size; below cluster_size it
  // needs a cluster_size of at least 16 KiB). 0 means cluster_size.
  static boost::asio::awaitable<Result<std::shared_ptr<Qcow2ClusterStore>>> create(
      std::shared_ptr<block::Device> file, std::string path, uint64_t size,
      uint32_t cluster_size, uint32_t granularity, std::string backing_file,
      std::string backing_format);
  // Whether create() takes this pair.
  static bool valid_granularity(uint32_t cluster_size, uint32_t granularity);

  Qcow2ClusterStore(std::shared_ptr<Qcow2Image> image, std::string path, uint32_t granularity)
      : image_(std::move(image)), path_(std::move(path)), granularity_(granularity) {}

  const std::shared_ptr<Qcow2Image>& image() const { return image_; }

  uint64_t size() const override { return image_->size(); }
  uint32_t cluster_size() const override { return granularity_; }  // the copy unit
  ClusterState state(uint64_t cluster) const override;
  uint64_t stored_bytes() const override { return image_->data_bytes_in_use(); }
  // No L2 table at all (a fresh store): O(L1 entries), not O(clusters).
  bool all_absent() const override { return image_->no_l2_tables(); }
  std::string path() const override { return path_; }
  std::string format() const override { return "qcow2"; }

  boost::asio::awaitable<std::error_code> read(uint64_t cluster, uint32_t offset,
                                               std::span<std::byte> out) override;
  boost::asio::awaitable<std::error_code> write_cluster(uint64_t cluster,
                                                        std::span<const std::byte> data) override;
  boost::asio::awaitable<std::error_code> mark_zero(uint64_t cluster) override;
  boost::asio::awaitable<std::error_code> discard(uint64_t cluster) override;
  boost::asio::awaitable<std::error_code> flush() override;
  boost::asio::awaitable<std::error_code> set_backing(const std::string& file,
                                                      const std::string& format) override;

 private:
  std::shared_ptr<Qcow2Image> image_;
  std::string path_;
  uint32_t granularity_;
};

}  // namespace fleece::cow
