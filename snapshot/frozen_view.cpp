#include "snapshot/frozen_view.hpp"

namespace fleece::snapshot {

using block::Task;

FrozenView::FrozenView(std::shared_ptr<cow::CbwFilter> filter, cow::SnapshotId id)
    : filter_(std::move(filter)), id_(id) {}

uint64_t FrozenView::size() const { return filter_->size(); }

block::Capabilities FrozenView::capabilities() const {
  block::Capabilities caps = filter_->capabilities();
  caps.read_only = true;
  caps.can_flush = false;
  caps.can_fua = false;
  caps.can_trim = true;
  caps.can_zero = false;
  caps.can_fast_zero = false;
  caps.can_cache = false;
  // Reads come from stores as well as the disk and are copied through
  // buffers of the filter, and trims are rounded inward: byte granularity.
  caps.min_block = 1;
  return caps;
}

Task<std::error_code> FrozenView::read(uint64_t offset, std::span<std::byte> out) {
  co_return co_await filter_->read_frozen(id_, offset, out);
}

Task<std::error_code> FrozenView::write(uint64_t, std::span<const std::byte>, block::WriteFlags) {
  co_return std::make_error_code(std::errc::read_only_file_system);
}

Task<std::error_code> FrozenView::write_zeroes(uint64_t, uint64_t, block::ZeroFlags) {
  co_return std::make_error_code(std::errc::read_only_file_system);
}

Task<std::error_code> FrozenView::trim(uint64_t offset, uint64_t length, block::WriteFlags) {
  co_return co_await filter_->discard_frozen(id_, offset, length);
}

Task<std::error_code> FrozenView::flush() { co_return std::error_code{}; }

Task<std::error_code> FrozenView::block_status(uint64_t offset, uint64_t length,
                                               std::vector<block::Extent>& out) {
  co_return co_await filter_->block_status_frozen(id_, offset, length, out);
}

}  // namespace fleece::snapshot
