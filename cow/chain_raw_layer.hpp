// ChainRawLayer: a raw image as a layer of a backing chain.
//
// A raw layer provides every byte of its range (there is nothing below it
// to fall through to), so in block_status its holes are allocated here:
// depth 1 with the hole and zero flags kept, as qemu:allocation-depth and
// `qemu-img map` report them. Everything else is the raw file's.
#pragma once

#include "block/device.hpp"

#include <memory>

namespace fleece::cow {

class ChainRawLayer final : public block::Device {
 public:
  explicit ChainRawLayer(std::shared_ptr<block::Device> file) : file_(std::move(file)) {}

  uint64_t size() const override { return file_->size(); }
  block::Capabilities capabilities() const override { return file_->capabilities(); }
  block::Task<std::error_code> read(uint64_t offset, std::span<std::byte> out) override {
    return file_->read(offset, out);
  }
  block::Task<std::error_code> write(uint64_t offset, std::span<const std::byte> data,
                                     block::WriteFlags flags) override {
    return file_->write(offset, data, flags);
  }
  block::Task<std::error_code> write_zeroes(uint64_t offset, uint64_t length,
                                            block::ZeroFlags flags) override {
    return file_->write_zeroes(offset, length, flags);
  }
  block::Task<std::error_code> trim(uint64_t offset, uint64_t length,
                                    block::WriteFlags flags) override {
    return file_->trim(offset, length, flags);
  }
  block::Task<std::error_code> flush() override { return file_->flush(); }
  block::Task<std::error_code> cache(uint64_t offset, uint64_t length) override {
    return file_->cache(offset, length);
  }
  std::optional<block::FileRange> file_range(uint64_t offset, uint64_t length) const override {
    return file_->file_range(offset, length);
  }
  block::Task<std::error_code> block_status(uint64_t offset, uint64_t length,
                                            std::vector<block::Extent>& out) override;

 private:
  std::shared_ptr<block::Device> file_;
};

}  // namespace fleece::cow
