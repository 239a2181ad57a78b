#include "cow/cbw_qcow2_store.hpp"

namespace fleece::cow {

using block::Task;

bool Qcow2ClusterStore::valid_granularity(uint32_t cluster_size, uint32_t granularity) {
  if (granularity == 0 || granularity == cluster_size) return true;
  return (granularity & (granularity - 1)) == 0 && granularity < cluster_size &&
         granularity >= cluster_size / 32 && cluster_size >= 16384;
}

Task<Result<std::shared_ptr<Qcow2ClusterStore>>> Qcow2ClusterStore::create(
    std::shared_ptr<block::Device> file, std::string path, uint64_t size, uint32_t cluster_size,
    uint32_t granularity, std::string backing_file, std::string backing_format) {
  if (granularity == 0) granularity = cluster_size;
  if (!valid_granularity(cluster_size, granularity))
    co_return make_error_code(std::errc::invalid_argument);
  // A named variable, not a temporary inside the co_await: GCC 12 destroys
  // such temporaries twice.
  Qcow2CreateOptions options;
  options.virtual_size = size;
  options.cluster_size = cluster_size;
  options.backing_file = std::move(backing_file);
  options.backing_format = std::move(backing_format);
  options.extended_l2 = granularity < cluster_size;
  auto image = co_await Qcow2Image::create(std::move(file), std::move(options));
  if (!image) co_return image.error();
  co_return std::make_shared<Qcow2ClusterStore>(std::move(*image), std::move(path), granularity);
}

ClusterState Qcow2ClusterStore::state(uint64_t cluster) const {
  // Every subcluster of a copy unit is always changed together: the first
  // one speaks for it.
  auto kind = image_->cached_subcluster_kind(cluster * granularity_);
  if (!kind) return ClusterState::absent;
  switch (*kind) {
    case Qcow2ClusterKind::data: return ClusterState::data;
    case Qcow2ClusterKind::zero: return ClusterState::zero;
    case Qcow2ClusterKind::unallocated: break;
  }
  return ClusterState::absent;
}

Task<std::error_code> Qcow2ClusterStore::read(uint64_t cluster, uint32_t offset,
                                              std::span<std::byte> out) {
  if (offset + out.size() > cluster_bytes(cluster))
    co_return std::make_error_code(std::errc::invalid_argument);
  co_return co_await image_->read(cluster * cluster_size() + offset, out);
}

Task<std::error_code> Qcow2ClusterStore::write_cluster(uint64_t cluster,
                                                       std::span<const std::byte> data) {
  co_return co_await image_->write_subclusters(cluster * granularity_, data);
}

Task<std::error_code> Qcow2ClusterStore::mark_zero(uint64_t cluster) {
  co_return co_await image_->zero_subclusters(cluster * granularity_, cluster_bytes(cluster));
}

Task<std::error_code> Qcow2ClusterStore::discard(uint64_t cluster) {
  co_return co_await image_->discard_subclusters(cluster * granularity_, cluster_bytes(cluster));
}

Task<std::error_code> Qcow2ClusterStore::flush() { co_return co_await image_->flush(); }

Task<std::error_code> Qcow2ClusterStore::set_backing(const std::string& file,
                                                     const std::string& format) {
  if (auto ec = co_await image_->set_backing_file(file, format)) co_return ec;
  co_return co_await image_->flush();
}

}  // namespace fleece::cow
