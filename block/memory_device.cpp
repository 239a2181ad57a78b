#include "block/memory_device.hpp"

#include <algorithm>
#include <cstring>
#include <mutex>

namespace fleece::block {

MemoryDevice::MemoryDevice(uint64_t size, Capabilities caps)
    : size_(size),
      caps_(caps),
      data_(size),
      allocated_((size + kBlock - 1) / kBlock, false) {}

Capabilities MemoryDevice::default_capabilities() {
  Capabilities c;
  c.can_trim = true;
  c.can_fast_zero = true;
  return c;
}

std::error_code MemoryDevice::injected(Op op) const { return errors_[static_cast<int>(op)]; }

void MemoryDevice::set_error(Op op, std::error_code ec) {
  std::unique_lock lock(mutex_);
  errors_[static_cast<int>(op)] = ec;
}

std::error_code MemoryDevice::check(uint64_t offset, uint64_t length, Op op) const {
  if (auto ec = injected(op)) return ec;
  if (offset > size_ || length > size_ - offset) return std::make_error_code(std::errc::invalid_argument);
  if (op == Op::write && caps_.read_only)
    return std::make_error_code(std::errc::read_only_file_system);
  return {};
}

Task<std::error_code> MemoryDevice::read(uint64_t offset, std::span<std::byte> out) {
  std::shared_lock lock(mutex_);
  if (auto ec = check(offset, out.size(), Op::read)) co_return ec;
  if (!out.empty()) std::memcpy(out.data(), data_.data() + offset, out.size());
  co_return std::error_code{};
}

Task<std::error_code> MemoryDevice::write(uint64_t offset, std::span<const std::byte> data,
                                          WriteFlags) {
  std::unique_lock lock(mutex_);
  if (auto ec = check(offset, data.size(), Op::write)) co_return ec;
  if (data.empty()) co_return std::error_code{};
  std::memcpy(data_.data() + offset, data.data(), data.size());
  for (uint64_t b = offset / kBlock; b <= (offset + data.size() - 1) / kBlock; ++b)
    allocated_[b] = true;
  ++writes_;
  co_return std::error_code{};
}

void MemoryDevice::zero_locked(uint64_t offset, uint64_t length, bool dealloc) {
  if (length == 0) return;
  std::memset(data_.data() + offset, 0, length);
  const uint64_t end = offset + length;
  if (dealloc) {
    // Only blocks wholly inside the range (the last block may be short).
    for (uint64_t b = (offset + kBlock - 1) / kBlock; b * kBlock < end; ++b)
      if (std::min(b * kBlock + kBlock, size_) <= end) allocated_[b] = false;
  } else {
    for (uint64_t b = offset / kBlock; b <= (end - 1) / kBlock; ++b) allocated_[b] = true;
  }
}

Task<std::error_code> MemoryDevice::write_zeroes(uint64_t offset, uint64_t length,
                                                 ZeroFlags flags) {
  std::unique_lock lock(mutex_);
  if (auto ec = check(offset, length, Op::write)) co_return ec;
  zero_locked(offset, length, flags.may_trim);
  ++writes_;
  co_return std::error_code{};
}

Task<std::error_code> MemoryDevice::trim(uint64_t offset, uint64_t length, WriteFlags) {
  std::unique_lock lock(mutex_);
  if (auto ec = check(offset, length, Op::write)) co_return ec;
  zero_locked(offset, length, true);
  ++writes_;
  co_return std::error_code{};
}

Task<std::error_code> MemoryDevice::flush() {
  std::shared_lock lock(mutex_);
  if (auto ec = injected(Op::flush)) co_return ec;
  ++flushes_;
  co_return std::error_code{};
}

Task<std::error_code> MemoryDevice::block_status(uint64_t offset, uint64_t length,
                                                 std::vector<Extent>& out) {
  std::shared_lock lock(mutex_);
  if (auto ec = check(offset, length, Op::read)) co_return ec;
  const uint64_t end = offset + length;
  uint64_t pos = offset;
  while (pos < end) {
    bool alloc = allocated_[pos / kBlock];
    uint64_t next = std::min((pos / kBlock + 1) * kBlock, end);
    while (next < end && allocated_[next / kBlock] == alloc)
      next = std::min(next + kBlock, end);
    out.push_back({next - pos, alloc ? 0u : (kExtentHole | kExtentZero), alloc ? 1u : 0u});
    pos = next;
  }
  co_return std::error_code{};
}

bool MemoryDevice::allocated(uint64_t offset) const {
  std::shared_lock lock(mutex_);
  return offset < size_ && allocated_[offset / kBlock];
}

std::vector<std::byte> MemoryDevice::contents(uint64_t offset, uint64_t length) const {
  std::shared_lock lock(mutex_);
  if (offset > size_) return {};
  length = std::min(length, size_ - offset);
  return {data_.begin() + static_cast<std::ptrdiff_t>(offset),
          data_.begin() + static_cast<std::ptrdiff_t>(offset + length)};
}

std::shared_ptr<Device> make_memory_device(uint64_t size) {
  return std::make_shared<MemoryDevice>(size);
}

}  // namespace fleece::block
