// DiskTable: the disks a server has opened, by node name.
//
// Separate from the export table because QMP separates them: blockdev-add
// opens a disk, nbd-server-add exports one (possibly under another name, or
// a frozen view of it). `fleece serve --disk NAME=...` does both.
// Thread-safe.
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

namespace fleece::server {

struct Disk {
  std::string name;  // node name
  DiskSpec spec;     // path, format, readonly, cache
  std::shared_ptr<block::Device> device;
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

// Opens the device a DiskSpec describes (raw files only, so far).
// On failure: the error code, and a one-line message naming the disk, the
// path and what to do.
Result<std::shared_ptr<block::Device>> open_disk(const DiskSpec& spec, std::string* message);

}  // namespace fleece::server
