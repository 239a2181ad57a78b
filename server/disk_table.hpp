// DiskTable: the disks a server has opened, by node name.
//
// Separate from the export table because QMP separates them: blockdev-add
// opens a disk, nbd-server-add exports one (possibly under another name, or
// a frozen view of it). `fleece serve --disk NAME=...` does both.
// Thread-safe.
//
// Every disk is opened the same way, raw or qcow2, so that fleecing and
// chain operations work on any of them:
//
//   export -> CbwFilter (copy-before-write, its write gate) -> BitmapFilter
//             (dirty bitmaps) -> BackingChain device (follows the active
//             layer) -> the image files
//
// The BitmapFilter sits below the gate, so a fleece freezes its bitmaps at
// the same instant as its snapshot (server/disk_bitmaps.hpp). Persistent
// bitmaps are loaded at open, before anything writes: from the active qcow2
// layer's bitmaps extension, or a raw disk's sidecar file.
//
// The CbwFilter costs one gate ticket and one bitmap test per write while no
// fleece is open; reads pass straight through.
#pragma once

#include "block/device.hpp"
#include "server/options.hpp"
#include "util/result.hpp"

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace fleece::cow {
class BackingChain;
class CbwFilter;
}  // namespace fleece::cow

namespace fleece::server {

class DiskBitmaps;

struct Disk {
  std::string name;  // node name
  DiskSpec spec;     // path, format, readonly, cache
  std::shared_ptr<cow::BackingChain> chain;  // the image and its backing files
  std::shared_ptr<cow::CbwFilter> filter;    // over chain->device(); fleeces hook in here
  std::shared_ptr<block::Device> device;     // what exports serve: the filter
  std::shared_ptr<DiskBitmaps> bitmaps;      // dirty bitmaps, below the filter
};

class DiskTable {
 public:
  std::error_code add(Disk disk);  // errc::file_exists if the name is taken
  std::error_code remove(std::string_view name);  // errc::no_such_device_or_address
  std::optional<Disk> find(std::string_view name) const;
  std::vector<Disk> list() const;  // in name order

 private:
  mutable std::mutex mutex_;
  std::map<std::string, Disk, std::less<>> disks_;
};

// Opens the image a DiskSpec describes with its backing chain and stacks the
// filter on it. Blocks for the header reads of the chain (quick: a few small
// reads per layer), so callers on an event loop may call it directly.
// On failure: the error code, and a one-line message naming the disk, the
// path and what to do.
Result<Disk> open_disk(const DiskSpec& spec, std::string* message);

}  // namespace fleece::server
