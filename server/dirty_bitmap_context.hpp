// DirtyBitmapContext: the NBD metadata context qemu:dirty-bitmap:NAME
// (docs/interop/nbd.txt in QEMU): status flag 1 = dirty, 0 = clean, for
// every byte of the export, at the bitmap's granularity.
//
// On a live export the bitmap keeps recording while clients read it (a
// snapshot of it is what fleece-start hands the NAME@ID export: frozen,
// exactly the writes between the previous point in time and this one).
// The context holds a `hold` token for as long as it exists: the
// DiskBitmaps busy count of the bitmap (QEMU's "in use by another
// operation"), released when the export and its last connection are gone.
#pragma once

#include "cow/dirty_bitmap.hpp"
#include "server/meta_context.hpp"

#include <memory>
#include <string>
#include <vector>

namespace fleece::server {

inline constexpr std::string_view kContextDirtyBitmapPrefix = "qemu:dirty-bitmap:";

class DirtyBitmapContext final : public MetaContext {
 public:
  // `exported_name` is NAME in qemu:dirty-bitmap:NAME.
  DirtyBitmapContext(std::string exported_name, std::shared_ptr<cow::DirtyBitmap> bitmap,
                     std::shared_ptr<void> hold = nullptr);

  const std::string& name() const override { return name_; }
  block::Task<std::error_code> extents(uint64_t offset, uint64_t length,
                                       std::vector<nbd::RawExtent>& out) override;

 private:
  std::string name_;
  std::shared_ptr<cow::DirtyBitmap> bitmap_;
  std::shared_ptr<void> hold_;
};

}  // namespace fleece::server
