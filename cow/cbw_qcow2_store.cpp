#include "cow/cbw_qcow2_store.hpp"

namespace fleece::cow {

using block::Task;

Task<Result<std::shared_ptr<Qcow2ClusterStore>>> Qcow2ClusterStore::create(
    std::shared_ptr<block::Device> file, std::string path, uint64_t size, uint32_t cluster_size,
    std::string backing_file, std::string backing_format) {
  // A named variable, not a temporary inside the co_await: GCC 12 destroys
  // such temporaries twice.
  Qcow2CreateOptions options;
  options.virtual_size = size;
  options.cluster_size = cluster_size;
  options.backing_file = std::move(backing_file);
  options.backing_format = std::move(backing_format);
  auto image = co_await Qcow2Image::create(std::move(file), std::move(options));
  if (!image) co_return image.error();
  co_return std::make_shared<Qcow2ClusterStore>(std::move(*image), std::move(path));
}

ClusterState Qcow2ClusterStore::state(uint64_t cluster) const {
  auto m = image_->cached_mapping(cluster);
  if (!m) return ClusterState::absent;
  switch (m->kind) {
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
  co_return co_await image_->write_cluster(cluster, data);
}

Task<std::error_code> Qcow2ClusterStore::mark_zero(uint64_t cluster) {
  co_return co_await image_->zero_cluster(cluster);
}

Task<std::error_code> Qcow2ClusterStore::discard(uint64_t cluster) {
  co_return co_await image_->discard_cluster(cluster);
}

Task<std::error_code> Qcow2ClusterStore::flush() { co_return co_await image_->flush(); }

Task<std::error_code> Qcow2ClusterStore::set_backing(const std::string& file,
                                                     const std::string& format) {
  if (auto ec = co_await image_->set_backing_file(file, format)) co_return ec;
  co_return co_await image_->flush();
}

}  // namespace fleece::cow
