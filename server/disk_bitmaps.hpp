// DiskBitmaps: the dirty bitmaps of one disk (QMP block-dirty-bitmap-*,
// query-block "dirty-bitmaps", nbd-server-add `bitmaps`, fleece-start
// `bitmaps`).
//
//   export -> CbwFilter -> BitmapFilter -> chain device
//
// Live bitmaps are attached to the disk's BitmapFilter and record every
// write below the fleece gate. Frozen bitmaps are the point-in-time halves
// fleece-start leaves behind, listed as "NAME@ID" (read-only, disabled):
// the NAME@ID export offers them as qemu:dirty-bitmap:NAME, and
// block-dirty-bitmap-merge folds one back into NAME when a backup failed.
//
// Persistence (cow/bitmap_store.hpp): the store is the active qcow2 layer's
// bitmaps extension or a raw disk's sidecar, opened with the disk, before
// any write. persist() writes every persistent bitmap (frozen ones too: on
// the next start they are ordinary disabled bitmaps, still mergeable) and
// clears in_use; the server calls it at clean shutdown and blockdev-del.
// Bitmaps found in use at open are inconsistent: listed, never trusted,
// removable only.
//
// Thread-safe (one mutex, never held across an await). The QMP strand
// serialises persist() and unstore().
#pragma once

#include "block/device.hpp"
#include "cow/bitmap_filter.hpp"
#include "cow/bitmap_store.hpp"
#include "cow/dirty_bitmap.hpp"

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace fleece::server {

class DiskTable;

class DiskBitmaps : public std::enable_shared_from_this<DiskBitmaps> {
 public:
  struct Entry {
    std::string name;  // as listed: NAME, or NAME@ID for a frozen one
    std::shared_ptr<cow::DirtyBitmap> bitmap;
    bool frozen = false;
    bool busy = false;  // exported over NBD
  };

  // `store` may be null (no persistence: its open failed, `why_no_store`
  // says why). `read_only`: nothing is written back.
  DiskBitmaps(std::shared_ptr<cow::BitmapFilter> filter, std::unique_ptr<cow::BitmapStore> store,
              bool read_only, std::string why_no_store = {});

  const std::shared_ptr<cow::BitmapFilter>& filter() const { return filter_; }
  // Whether persistent bitmaps can be kept; else *why says why not.
  bool can_persist(std::string* why) const;

  std::vector<Entry> list() const;  // live ones in attach order, then frozen ones by name
  std::optional<Entry> find(std::string_view name) const;

  // A new live bitmap (std::errc::file_exists if the name is taken by a
  // live or frozen one).
  std::error_code add(std::shared_ptr<cow::DirtyBitmap> bitmap);
  // Removes a live or frozen one from memory (nullptr if none).
  std::shared_ptr<cow::DirtyBitmap> remove(std::string_view name);
  // A frozen bitmap under its listed name (std::errc::file_exists if taken).
  std::error_code add_frozen(std::string name, std::shared_ptr<cow::DirtyBitmap> bitmap);

  // Marks `name` busy until the returned token is destroyed.
  std::shared_ptr<void> hold(const std::string& name);

  // Writes the persistent bitmaps, in_use cleared (no-op without a store
  // or on a read-only disk).
  block::Task<std::error_code> persist();
  // Deletes a stored bitmap now (block-dirty-bitmap-remove); no error when
  // it was never stored.
  block::Task<std::error_code> unstore(std::string name);

 private:
  const std::shared_ptr<cow::BitmapFilter> filter_;
  const std::unique_ptr<cow::BitmapStore> store_;
  const bool read_only_;
  const std::string why_no_store_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<cow::DirtyBitmap>, std::less<>> frozen_;
  std::map<std::string, int, std::less<>> busy_;
};

// Clean shutdown, after the last write: persist() of every disk, failures
// logged.
block::Task<void> persist_disk_bitmaps(DiskTable& disks);

}  // namespace fleece::server
