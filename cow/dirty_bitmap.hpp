// DirtyBitmap: which granules of a disk were written since some point in
// time (QEMU's "dirty bitmap", docs/interop/bitmaps.rst).
//
// One bit per granule: granule i covers bytes [i * granularity,
// (i + 1) * granularity) of the disk (the last one may end past size()).
// Granularity is a power of two from 512 B to 2 GiB (QEMU's range), 64 KiB
// by default as in QEMU.
//
// Contract
//  * Thread-safe: every method locks an internal std::mutex, held only for
//    the bit operation (never across a co_await).
//  * mark(offset, len) rounds outward to whole granules and records only
//    while the bitmap is enabled and not frozen (a disabled bitmap does not
//    record writes). set_dirty() / clear() / merge_from() are management
//    operations: they act on enabled and disabled bitmaps alike, and fail
//    with std::errc::operation_not_permitted on a frozen one.
//  * A frozen bitmap is a read-only point-in-time copy (frozen_copy(), or
//    the bitmap BitmapFilter::swap() hands back). It never changes again.
//  * An inconsistent bitmap (found marked in use after a crash, QEMU's
//    "inconsistent") is never trusted: it is disabled, reads as all dirty
//    (extents(), is_dirty()), and can only be removed (management
//    operations fail with std::errc::operation_not_permitted).
//  * extents(offset, len) answers an NBD `qemu:dirty-bitmap:NAME` query:
//    consecutive runs covering exactly [offset, offset + len) clamped to
//    size(), flag kDirtyExtentFlag on dirty runs.
//  * Serialisation uses QEMU's on-disk bit order (qcow2.txt "Bitmap data"):
//    bit (i % 8) of byte (i / 8) is granule i, least significant bit first.
//    serialized_bytes() = ceil(granules / 8); tail bits past the last
//    granule are written as zero and ignored when read.
#pragma once

#include "util/result.hpp"
#include "util/zeroed_vector.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace fleece::cow {

// NBD qemu:dirty-bitmap context: flag bit 0 = dirty.
inline constexpr uint32_t kDirtyExtentFlag = 1;

struct DirtyExtent {
  uint64_t length = 0;
  bool dirty = false;
  bool operator==(const DirtyExtent&) const = default;
};

class DirtyBitmap {
 public:
  static constexpr uint64_t kDefaultGranularity = 64 * 1024;
  static constexpr uint64_t kMinGranularity = 512;
  static constexpr uint64_t kMaxGranularity = uint64_t{1} << 31;
  // Bits held in memory at most (QEMU's BME_MAX_PHYS_SIZE is 512 MiB of
  // bitmap data); beyond it create() fails with std::errc::file_too_large.
  static constexpr uint64_t kMaxBytes = 512ull << 20;
  static constexpr std::size_t kMaxNameLength = 1023;  // qcow2 name_size limit

  // Fails with std::errc::invalid_argument for an empty or too long name or
  // a granularity that is not a power of two in range.
  static Result<std::shared_ptr<DirtyBitmap>> create(std::string name, uint64_t size,
                                                     uint64_t granularity = kDefaultGranularity);
  static bool valid_granularity(uint64_t granularity);

  const std::string& name() const { return name_; }
  uint64_t size() const { return size_; }
  uint64_t granularity() const { return uint64_t{1} << granularity_bits_; }
  uint32_t granularity_bits() const { return granularity_bits_; }
  uint64_t granules() const { return granules_; }

  bool enabled() const;
  void set_enabled(bool enabled);  // ignored for frozen and inconsistent bitmaps
  bool frozen() const;
  bool inconsistent() const;
  void set_inconsistent();  // also disables; one way
  // Whether the bitmap is kept on disk (qcow2 or sidecar) across restarts.
  bool persistent() const;
  void set_persistent(bool persistent);

  // Write path: rounds outward, records only when enabled.
  void mark(uint64_t offset, uint64_t length);
  // Management.
  std::error_code set_dirty(uint64_t offset, uint64_t length);
  std::error_code clear();
  // ORs `other` in (sizes must match, else std::errc::invalid_argument; the
  // granularities may differ: each dirty granule of `other` marks the bytes
  // it covers here).
  std::error_code merge_from(const DirtyBitmap& other);

  bool is_dirty(uint64_t offset, uint64_t length) const;
  std::vector<DirtyExtent> extents(uint64_t offset, uint64_t length) const;
  // Dirty granules times the granularity, the last granule clamped to size().
  uint64_t dirty_bytes() const;

  // A frozen, disabled copy with the same name, granularity and contents.
  std::shared_ptr<DirtyBitmap> frozen_copy() const;
  // Freezes this bitmap in place (BitmapFilter::swap()).
  void freeze();
  // An empty, enabled bitmap with the same name, size, granularity and
  // persistence.
  std::shared_ptr<DirtyBitmap> fresh_like() const;

  // --- QEMU bit order -----------------------------------------------------
  uint64_t serialized_bytes() const { return (granules_ + 7) / 8; }
  // Bytes [byte_offset, byte_offset + out.size()) of the serialised bitmap;
  // bytes past serialized_bytes() are zero.
  void serialize(uint64_t byte_offset, std::span<std::byte> out) const;
  // Sets (ORs in) the bits of `in` at byte_offset; bits past the last
  // granule are ignored. Works on any bitmap that is not frozen (loading).
  void deserialize_or(uint64_t byte_offset, std::span<const std::byte> in);
  // Marks the granules of bytes [byte_offset, byte_offset + n) of the
  // serialised bitmap all dirty (a qcow2 "all ones" bitmap cluster).
  void deserialize_ones(uint64_t byte_offset, uint64_t n);
  // Whether bytes [byte_offset, byte_offset + n) of the serialised bitmap
  // are all zero (a qcow2 bitmap cluster that needs no storage).
  bool serialized_range_zero(uint64_t byte_offset, uint64_t n) const;

 private:
  DirtyBitmap(std::string name, uint64_t size, uint32_t granularity_bits);
  DirtyBitmap(const DirtyBitmap& other);  // contents and properties, under other's lock

  bool test_locked(uint64_t g) const {
    return (words_[g >> 6] >> (g & 63)) & 1;
  }
  void set_range_locked(uint64_t first, uint64_t end);  // granules [first, end)
  void set_bytes_locked(uint64_t offset, uint64_t length);
  uint64_t next_locked(uint64_t g, uint64_t end, bool value) const;

  const std::string name_;
  const uint64_t size_;
  const uint32_t granularity_bits_;
  const uint64_t granules_;

  mutable std::mutex mu_;
  ZeroedVector<uint64_t> words_;  // zero pages until written
  uint64_t count_ = 0;  // dirty granules
  bool enabled_ = true;
  bool frozen_ = false;
  bool inconsistent_ = false;
  bool persistent_ = false;
};

}  // namespace fleece::cow
