// BitmapFilter: a pass-through Device that records writes in dirty bitmaps.
//
// Every write, write_zeroes and trim marks each enabled attached bitmap
// BEFORE it is issued to the device below: a write that then fails leaves
// its range marked (over-reporting is safe: the next incremental backup
// copies a few extra granules), while a write that succeeds is never
// missing from a bitmap. Reads, flush, cache and block_status pass through.
//
// Bitmaps attach and detach at any time (a mutex-protected list; marking
// happens under that mutex, so a write marks either the list before or the
// list after an attach/detach/swap, never half of one).
//
// swap(name): the fleece point in time. The attached bitmap NAME is frozen
// and returned, and a fresh empty bitmap with the same name, granularity and
// persistence takes its place in one step under the list mutex.
// Contract for exactness: call swap() while the write gate above this
// filter (CbwFilter's WriteGate; the server stacks export -> CbwFilter ->
// BitmapFilter -> disk) is closed and drained. Then no write is in flight
// here, every write acknowledged before the gate closed is in the frozen
// bitmap (it was marked before it was issued), and every write admitted
// after the gate opens is in the fresh one: no write is in neither and none
// in both. Without the gate, a write racing the swap is still recorded in
// exactly one of the two, but which one need not match the point in time.
#pragma once

#include "block/device.hpp"
#include "cow/dirty_bitmap.hpp"
#include "util/result.hpp"

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fleece::cow {

class BitmapFilter final : public block::Device {
 public:
  explicit BitmapFilter(std::shared_ptr<block::Device> below);

  const std::shared_ptr<block::Device>& below() const { return below_; }

  // Fails with std::errc::file_exists if a bitmap of that name is attached,
  // std::errc::invalid_argument if its size is not the device's size.
  std::error_code attach(std::shared_ptr<DirtyBitmap> bitmap);
  // The detached bitmap, or nullptr if none has that name.
  std::shared_ptr<DirtyBitmap> detach(std::string_view name);
  std::shared_ptr<DirtyBitmap> find(std::string_view name) const;
  std::vector<std::shared_ptr<DirtyBitmap>> bitmaps() const;  // attach order
  // See the contract above. Returns the old bitmap, now frozen; fails with
  // std::errc::no_such_file_or_directory for an unknown name and
  // std::errc::operation_not_permitted for an inconsistent bitmap.
  Result<std::shared_ptr<DirtyBitmap>> swap(std::string_view name);
  // The same with a caller-made replacement (same name and size, else
  // std::errc::invalid_argument).
  Result<std::shared_ptr<DirtyBitmap>> swap(std::string_view name,
                                            std::shared_ptr<DirtyBitmap> fresh);

  // --- block::Device ------------------------------------------------------
  uint64_t size() const override { return below_->size(); }
  block::Capabilities capabilities() const override { return below_->capabilities(); }
  block::Task<std::error_code> read(uint64_t offset, std::span<std::byte> out) override;
  block::Task<std::error_code> write(uint64_t offset, std::span<const std::byte> data,
                                     block::WriteFlags flags) override;
  block::Task<std::error_code> write_zeroes(uint64_t offset, uint64_t length,
                                            block::ZeroFlags flags) override;
  block::Task<std::error_code> trim(uint64_t offset, uint64_t length,
                                    block::WriteFlags flags) override;
  block::Task<std::error_code> flush() override;
  block::Task<std::error_code> cache(uint64_t offset, uint64_t length) override;
  block::Task<std::error_code> block_status(uint64_t offset, uint64_t length,
                                            std::vector<block::Extent>& out) override;
  // Reads pass through unchanged, so the bytes are where the disk says.
  std::optional<block::FileRange> file_range(uint64_t offset, uint64_t length) const override {
    return below_->file_range(offset, length);
  }

 private:
  void mark(uint64_t offset, uint64_t length);

  const std::shared_ptr<block::Device> below_;
  mutable std::mutex mu_;  // guards bitmaps_; held while marking, never across co_await
  std::vector<std::shared_ptr<DirtyBitmap>> bitmaps_;
};

}  // namespace fleece::cow
