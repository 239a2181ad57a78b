// BitmapSidecar: persistent dirty bitmaps of a raw disk, in a file beside
// it (DISK.fleece-bitmaps). Same crash semantics as the qcow2 store (see
// BitmapStore): a writable open rewrites the file with every bitmap in_use;
// store() writes them with in_use cleared; a bitmap found in_use, or
// recorded for another disk size, loads as inconsistent.
//
// Format, version 1 (all integers little-endian):
//   header, 32 bytes:
//     0  magic "FLEECEBM" (8 bytes)
//     8  version u32 = 1
//    12  count u32 (bitmaps that follow, at most 65535)
//    16  disk_size u64 (the disk's size in bytes when written)
//    24  reserved u64 = 0
//   per bitmap, a 16-byte head then its name and data:
//     0  name_len u16 (1..1023)
//     2  granularity_bits u8 (9..31)
//     3  reserved u8 = 0
//     4  flags u32: bit 0 in_use, bit 1 enabled (auto); others 0
//     8  data_len u64: ceil(ceil(disk_size / granularity) / 8), or 0 for
//        an in_use bitmap (its data is never trusted)
//    16  name (name_len bytes, not NUL-terminated)
//        data (data_len bytes, QEMU's bit order: granule i is bit i % 8
//        of byte i / 8, tail bits zero)
//   trailer: CRC-32 (IEEE, as zlib's crc32) u32 of every byte before it.
//
// Written atomically: a temporary file in the same directory, fsync, rename
// over the old one, fsync of the directory. Parsing treats the file as
// hostile: any field out of range, a short file, trailing bytes or a bad
// CRC fail open() with fleece::Errc::corrupt_image and a reason in *why;
// a writable open then renames the bad file aside (DISK.fleece-bitmaps.bad)
// so fleece never trusts it and it stays for inspection.
// File I/O runs on the I/O thread pool (block::run_blocking).
#pragma once

#include "cow/bitmap_store.hpp"
#include "util/result.hpp"

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace fleece::cow {

class BitmapSidecar final : public BitmapStore {
 public:
  static std::string path_for(const std::string& disk_path) {
    return disk_path + ".fleece-bitmaps";
  }
  static block::Task<Result<std::unique_ptr<BitmapSidecar>>> open(
      const std::string& path, uint64_t disk_size, bool writable, std::string* why = nullptr);

  std::vector<std::shared_ptr<DirtyBitmap>> loaded() const override { return loaded_; }
  block::Task<std::error_code> store(
      const std::vector<std::shared_ptr<DirtyBitmap>>& bitmaps) override;
  block::Task<std::error_code> remove(const std::string& name) override;

  // The encoding itself, without I/O (for tests and tools).
  struct Entry {
    std::string name;
    uint32_t granularity_bits = 16;
    uint32_t flags = 0;
    std::vector<std::byte> data;
  };
  static constexpr uint32_t kInUse = 1u << 0;
  static constexpr uint32_t kEnabled = 1u << 1;
  static std::vector<std::byte> encode(uint64_t disk_size, std::span<const Entry> entries);
  static Result<std::vector<Entry>> parse(std::span<const std::byte> file, uint64_t* disk_size,
                                          std::string* why);

 private:
  BitmapSidecar(std::string path, uint64_t disk_size, bool writable)
      : path_(std::move(path)), disk_size_(disk_size), writable_(writable) {}
  block::Task<std::error_code> write(const std::vector<Entry>& entries);  // a named local

  std::string path_;
  uint64_t disk_size_;
  bool writable_;
  std::vector<std::shared_ptr<DirtyBitmap>> loaded_;
  std::vector<Entry> disk_;  // what the file holds now
};

}  // namespace fleece::cow
