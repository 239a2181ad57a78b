// FrozenView: a snapshot of one disk as a read-only Device (what export
// "disk@id" serves).
//
// Bound to a CbwFilter and one of its SnapshotIds. Reads return the disk
// exactly as it was at the snapshot's point in time, or fail:
// fleece::Errc::access_revoked for clusters the client discarded,
// fleece::Errc::snapshot_broken once the snapshot broke,
// std::errc::no_such_device once the snapshot was stopped.
// trim() is the client saying it is done with a range (discard_frozen:
// rounded inward to clusters, so a partial-cluster trim does nothing);
// block_status() reports what the snapshot holds. write and write_zeroes
// fail with std::errc::read_only_file_system; flush succeeds (nothing to
// make durable).
#pragma once

#include "block/device.hpp"
#include "cow/cbw_filter.hpp"

#include <memory>

namespace fleece::snapshot {

class FrozenView final : public block::Device {
 public:
  FrozenView(std::shared_ptr<cow::CbwFilter> filter, cow::SnapshotId id);

  cow::SnapshotId id() const { return id_; }
  const std::shared_ptr<cow::CbwFilter>& filter() const { return filter_; }

  uint64_t size() const override;
  block::Capabilities capabilities() const override;
  block::Task<std::error_code> read(uint64_t offset, std::span<std::byte> out) override;
  block::Task<std::error_code> write(uint64_t offset, std::span<const std::byte> data,
                                     block::WriteFlags flags) override;
  block::Task<std::error_code> write_zeroes(uint64_t offset, uint64_t length,
                                            block::ZeroFlags flags) override;
  block::Task<std::error_code> trim(uint64_t offset, uint64_t length,
                                    block::WriteFlags flags) override;
  block::Task<std::error_code> flush() override;
  block::Task<std::error_code> block_status(uint64_t offset, uint64_t length,
                                            std::vector<block::Extent>& out) override;

 private:
  std::shared_ptr<cow::CbwFilter> filter_;
  cow::SnapshotId id_;
};

}  // namespace fleece::snapshot
