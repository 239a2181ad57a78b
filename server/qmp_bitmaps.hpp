// The QMP side of dirty bitmaps that other command groups use:
// query-block's "dirty-bitmaps", nbd-server-add's `bitmaps` and
// fleece-start's `bitmaps`. The block-dirty-bitmap-* commands themselves
// are in qmp_commands_bitmap.cpp; error texts are QEMU's
// (block/monitor/bitmap-qmp-cmds.c, block/dirty-bitmap.c, nbd/server.c).
#pragma once

#include "server/export_registry.hpp"
#include "server/qmp_error.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <variant>
#include <vector>

namespace fleece::cow {
class DirtyBitmap;
}

namespace fleece::server {

struct Disk;
class DiskBitmaps;
class DiskTable;

// QEMU's BlockDirtyInfo list of a disk: name, granularity, count,
// recording, persistent, busy, and inconsistent (only when true); fleece
// adds "frozen": true on the NAME@ID halves left by fleece-start.
boost::json::array dirty_bitmaps_info(const Disk& disk);

// nbd-server-add `bitmaps` (names on the node): one qemu:dirty-bitmap:NAME
// context each, or QEMU's error. `bitmaps` may be null (absent).
std::variant<MetaContexts, QmpError> export_bitmap_contexts(const Disk& disk,
                                                            const boost::json::value* bitmaps,
                                                            bool writable);

// fleece-start `bitmaps`: [{"node", "name"}]. prepare() checks everything
// before anything starts and makes the empty bitmaps that will take the
// frozen ones' places (32 MiB for 1 TiB at 4 KiB granularity: not while
// writes are held); freeze() runs inside FleeceGroup::start with the gates
// closed (BitmapFilter::swap of each); contexts() gives each frozen
// view's export its qemu:dirty-bitmap:NAME; then commit() lists the frozen
// halves as NAME@ID, or rollback() (start failed) merges them back so no
// write is lost from NAME.
class FleeceBitmaps {
 public:
  static std::variant<std::shared_ptr<FleeceBitmaps>, QmpError> prepare(
      DiskTable& disks, const std::string& id, const std::vector<std::string>& devices,
      const boost::json::value* bitmaps);

  bool empty() const { return items_.empty(); }
  std::error_code freeze();
  MetaContexts contexts(const std::string& device);
  void commit();
  void rollback();

 private:
  struct Item {
    std::string node;
    std::string name;
    std::shared_ptr<DiskBitmaps> bitmaps;
    std::shared_ptr<cow::DirtyBitmap> fresh;   // made by prepare(), swapped in by freeze()
    std::shared_ptr<cow::DirtyBitmap> frozen;  // set by freeze()
  };
  std::string id_;
  std::vector<Item> items_;
};

}  // namespace fleece::server
