// MemoryDevice: a Device held in memory, for the tests of every layer.
//
// Bytes live in a vector; an allocation map at 4 KiB granularity lets
// block_status report holes the way a sparse file would:
//  * the device starts all hole (reads zero, block_status HOLE|ZERO);
//  * write allocates every 4 KiB block it touches;
//  * trim and write_zeroes(may_trim) zero the range and free the blocks
//    wholly inside it (partial blocks stay allocated, zeroed);
//  * write_zeroes without may_trim zeroes and allocates;
//  * block_status merges runs: allocated = 0 (depth 1), free =
//    HOLE|ZERO (depth 0).
// Operations complete at once (no suspension). A shared mutex makes
// concurrent use from several threads safe. Fault injection: set_error()
// makes every later operation of a kind fail with a given error until
// cleared, so upper layers can test their error paths.
#pragma once

#include "block/device.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <vector>

namespace fleece::block {

class MemoryDevice final : public Device {
 public:
  static constexpr uint64_t kBlock = 4096;

  explicit MemoryDevice(uint64_t size, Capabilities caps = default_capabilities());
  static Capabilities default_capabilities();

  uint64_t size() const override { return size_; }
  Capabilities capabilities() const override { return caps_; }

  Task<std::error_code> read(uint64_t offset, std::span<std::byte> out) override;
  Task<std::error_code> write(uint64_t offset, std::span<const std::byte> data,
                              WriteFlags flags) override;
  Task<std::error_code> write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags) override;
  Task<std::error_code> trim(uint64_t offset, uint64_t length, WriteFlags flags) override;
  Task<std::error_code> flush() override;
  Task<std::error_code> block_status(uint64_t offset, uint64_t length,
                                     std::vector<Extent>& out) override;

  // Fault injection (operation kinds: read, write = write/write_zeroes/trim,
  // flush). An empty error_code clears it.
  enum class Op { read, write, flush };
  void set_error(Op op, std::error_code ec);

  // Test helpers: whether the 4 KiB block holding offset is allocated; a
  // copy of a range of the contents; counters of completed operations.
  bool allocated(uint64_t offset) const;
  std::vector<std::byte> contents(uint64_t offset, uint64_t length) const;
  uint64_t writes() const { return writes_.load(); }
  uint64_t flushes() const { return flushes_.load(); }

 private:
  std::error_code check(uint64_t offset, uint64_t length, Op op) const;
  std::error_code injected(Op op) const;
  // Zeroes [offset, offset+length); frees whole blocks when dealloc, else
  // allocates every block touched. Caller holds the lock exclusively.
  void zero_locked(uint64_t offset, uint64_t length, bool dealloc);

  const uint64_t size_;
  const Capabilities caps_;
  mutable std::shared_mutex mutex_;
  std::vector<std::byte> data_;
  std::vector<bool> allocated_;
  std::error_code errors_[3];
  std::atomic<uint64_t> writes_{0};
  std::atomic<uint64_t> flushes_{0};
};

std::shared_ptr<Device> make_memory_device(uint64_t size);

}  // namespace fleece::block
