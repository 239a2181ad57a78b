#include "cow/chain_device.hpp"

namespace fleece::cow {

using block::Task;

void ChainDevice::set_target(std::shared_ptr<block::Device> target) {
  std::lock_guard g(mu_);
  target_ = std::move(target);
}

std::shared_ptr<block::Device> ChainDevice::target() const {
  std::lock_guard g(mu_);
  return target_;
}

uint64_t ChainDevice::size() const { return target()->size(); }

block::Capabilities ChainDevice::capabilities() const { return target()->capabilities(); }

// Each request holds its target in a named local for the whole await, so a
// concurrent set_target() cannot close the device under it.
Task<std::error_code> ChainDevice::read(uint64_t offset, std::span<std::byte> out) {
  auto t = target();
  co_return co_await t->read(offset, out);
}

Task<std::error_code> ChainDevice::write(uint64_t offset, std::span<const std::byte> data,
                                         block::WriteFlags flags) {
  auto t = target();
  co_return co_await t->write(offset, data, flags);
}

Task<std::error_code> ChainDevice::write_zeroes(uint64_t offset, uint64_t length,
                                                block::ZeroFlags flags) {
  auto t = target();
  co_return co_await t->write_zeroes(offset, length, flags);
}

Task<std::error_code> ChainDevice::trim(uint64_t offset, uint64_t length, block::WriteFlags flags) {
  auto t = target();
  co_return co_await t->trim(offset, length, flags);
}

Task<std::error_code> ChainDevice::flush() {
  auto t = target();
  co_return co_await t->flush();
}

Task<std::error_code> ChainDevice::cache(uint64_t offset, uint64_t length) {
  auto t = target();
  co_return co_await t->cache(offset, length);
}

Task<std::error_code> ChainDevice::block_status(uint64_t offset, uint64_t length,
                                                std::vector<block::Extent>& out) {
  auto t = target();
  co_return co_await t->block_status(offset, length, out);
}

}  // namespace fleece::cow
