// BitmapStore: where a disk's persistent dirty bitmaps live between runs:
// the qcow2 bitmaps extension (Qcow2BitmapStore, cow/qcow2_bitmaps.hpp) or
// a sidecar file beside a raw disk (BitmapSidecar, cow/bitmap_sidecar.hpp).
//
// Crash semantics (QEMU's, docs/interop/bitmaps.rst): opening a store for
// writing marks every stored bitmap in_use on disk before the disk is
// written; a clean store() writes the bitmaps and clears in_use. A bitmap
// found in_use at open was not saved (a crash): it is loaded as
// inconsistent (DirtyBitmap::inconsistent(): disabled, reads as all dirty,
// never trusted; a full backup is needed) and stays marked in_use on disk
// until it is removed.
//
// Usage (one disk; the caller serialises store() and remove()):
//   auto st = co_await Qcow2BitmapStore::open(image, &why);   // or BitmapSidecar
//   for (auto& b : (*st)->loaded()) filter->attach(b);        // BitmapFilter
//   ... block-dirty-bitmap-add persistent=true: b->set_persistent(true) ...
//   auto all = filter->bitmaps();                  // a named local
//   co_await (*st)->store(all);                    // clean shutdown
//
// store(bitmaps) writes the persistent bitmaps among `bitmaps` as the
// complete set: stored bitmaps not in it are deleted. The caller keeps
// `bitmaps` alive until the call completes (pass a named local).
#pragma once

#include "block/device.hpp"
#include "cow/dirty_bitmap.hpp"

#include <memory>
#include <string>
#include <system_error>
#include <vector>

namespace fleece::cow {

class BitmapStore {
 public:
  virtual ~BitmapStore() = default;
  // The bitmaps found at open, persistent, inconsistent ones included.
  virtual std::vector<std::shared_ptr<DirtyBitmap>> loaded() const = 0;
  virtual block::Task<std::error_code> store(
      const std::vector<std::shared_ptr<DirtyBitmap>>& bitmaps) = 0;
  // Deletes one stored bitmap now (std::errc::no_such_file_or_directory if
  // none has that name).
  virtual block::Task<std::error_code> remove(const std::string& name) = 0;
};

}  // namespace fleece::cow
