// ChainDevice: the Device a backing chain's user holds; it forwards every
// request to the chain's current active layer.
//
// The target changes when a live snapshot puts a new layer on top
// (set_target). A request picks the target when it starts and finishes on
// it, so the caller drains writes around a change that must not split them
// (a snapshot's point in time). Capabilities and size are the target's.
//
// file_range() is the target's (Qcow2Image: one layer's contiguous data
// clusters, or a raw base under unallocated layers). It stays valid while
// a block-commit runs: the job writes into base only bytes that a layer
// above shadows, so a range that resolved to base never covers them, and
// the layers it reads from are read-only until they leave the chain.
#pragma once

#include "block/device.hpp"

#include <memory>
#include <mutex>

namespace fleece::cow {

class ChainDevice final : public block::Device {
 public:
  explicit ChainDevice(std::shared_ptr<block::Device> target) : target_(std::move(target)) {}

  void set_target(std::shared_ptr<block::Device> target);
  std::shared_ptr<block::Device> target() const;

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
  block::Task<std::error_code> cache(uint64_t offset, uint64_t length) override;
  std::optional<block::FileRange> file_range(uint64_t offset, uint64_t length) const override {
    return target()->file_range(offset, length);
  }
  block::Task<std::error_code> block_status(uint64_t offset, uint64_t length,
                                            std::vector<block::Extent>& out) override;

 private:
  mutable std::mutex mu_;
  std::shared_ptr<block::Device> target_;
};

}  // namespace fleece::cow
