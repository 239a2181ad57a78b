// Qcow2BitmapStore: persistent dirty bitmaps in a qcow2 image's bitmaps
// extension (qcow2.txt "Bitmaps extension", "Bitmaps"), the way QEMU keeps
// them, so `qemu-img info` lists them and QEMU uses them.
//
// open(): reads the directory (header extension 0x23852875, valid only with
// autoclear bit 0) and every bitmap table and data cluster, checking each
// reference (alignment, inside the file, refcounted, not the image's own
// core metadata, not referenced twice). Unallocated table entries read as
// all zeroes, or all ones with bit 0 set. On a writable image it then marks
// every bitmap in_use on disk (see BitmapStore for the crash semantics);
// the image must have been opened with Qcow2OpenOptions::keep_bitmaps and
// nothing may write to it before open() completes. A directory that fails
// the checks fails open() with the reason in *why; on a writable image the
// autoclear bit is cleared first, so no reader trusts those bitmaps while
// fleece writes the disk.
// An extension present without autoclear bit 0 (written by a program
// lacking bitmap support) is loaded as inconsistent bitmaps; their
// clusters are not trusted and never freed (a leak, never a corruption).
//
// store() writes each bitmap afresh (new table and data clusters; an
// all-zero data cluster is an unallocated table entry), makes them durable,
// writes a new directory, switches the header extension to it, and only
// then frees the old directory, tables and data. A crash at any point
// leaves either the old or the new set (and maybe leaked clusters).
#pragma once

#include "cow/bitmap_store.hpp"
#include "cow/qcow2_bitmap_directory.hpp"
#include "cow/qcow2_image.hpp"
#include "util/result.hpp"

#include <memory>
#include <string>
#include <vector>

namespace fleece::cow {

class Qcow2BitmapStore final : public BitmapStore {
 public:
  static block::Task<Result<std::unique_ptr<Qcow2BitmapStore>>> open(
      std::shared_ptr<Qcow2Image> image, std::string* why = nullptr);

  std::vector<std::shared_ptr<DirtyBitmap>> loaded() const override { return loaded_; }
  block::Task<std::error_code> store(
      const std::vector<std::shared_ptr<DirtyBitmap>>& bitmaps) override;
  block::Task<std::error_code> remove(const std::string& name) override;

 private:
  // One bitmap as it is on disk now.
  struct OnDisk {
    Qcow2BitmapEntry entry;
    std::vector<uint64_t> table;  // raw table entries
    bool owned = true;            // its clusters may be freed
  };

  explicit Qcow2BitmapStore(std::shared_ptr<Qcow2Image> image) : image_(std::move(image)) {}
  block::Task<std::error_code> load(std::string* why);
  // Writes one bitmap's data and table into fresh clusters.
  block::Task<Result<OnDisk>> write_bitmap(const DirtyBitmap& b);
  // Makes `next` the on-disk set: directory, header switch, then frees what
  // only the old set referenced.
  block::Task<std::error_code> commit(std::vector<OnDisk> next);
  std::vector<uint64_t> clusters_of(const OnDisk& d) const;

  std::shared_ptr<Qcow2Image> image_;
  std::vector<std::shared_ptr<DirtyBitmap>> loaded_;
  std::vector<OnDisk> disk_;
  uint64_t dir_offset_ = 0;  // the current directory's clusters (0: none)
  uint64_t dir_clusters_ = 0;
  bool dir_owned_ = true;
};

}  // namespace fleece::cow
