#include "block/no_flush_device.hpp"

namespace fleece::block {
namespace {

// Forwards return the device below's Task as is: no coroutine frame of their
// own on the store's hot path.
class NoFlushDevice final : public Device {
 public:
  explicit NoFlushDevice(std::shared_ptr<Device> below) : below_(std::move(below)) {}

  uint64_t size() const override { return below_->size(); }
  Capabilities capabilities() const override { return below_->capabilities(); }

  Task<std::error_code> read(uint64_t offset, std::span<std::byte> out) override {
    return below_->read(offset, out);
  }
  Task<std::error_code> write(uint64_t offset, std::span<const std::byte> data,
                              WriteFlags flags) override {
    flags.fua = false;
    return below_->write(offset, data, flags);
  }
  Task<std::error_code> write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags) override {
    flags.fua = false;
    return below_->write_zeroes(offset, length, flags);
  }
  Task<std::error_code> trim(uint64_t offset, uint64_t length, WriteFlags flags) override {
    flags.fua = false;
    return below_->trim(offset, length, flags);
  }
  Task<std::error_code> flush() override { co_return std::error_code{}; }
  Task<std::error_code> cache(uint64_t offset, uint64_t length) override {
    return below_->cache(offset, length);
  }
  Task<std::error_code> block_status(uint64_t offset, uint64_t length,
                                     std::vector<Extent>& out) override {
    return below_->block_status(offset, length, out);
  }
  std::optional<FileRange> file_range(uint64_t offset, uint64_t length) const override {
    return below_->file_range(offset, length);
  }

 private:
  std::shared_ptr<Device> below_;
};

}  // namespace

std::shared_ptr<Device> without_flush(std::shared_ptr<Device> below) {
  return std::make_shared<NoFlushDevice>(std::move(below));
}

}  // namespace fleece::block
