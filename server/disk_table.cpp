#include "server/disk_table.hpp"

#include "block/raw_file.hpp"

#include <fmt/format.h>

namespace fleece::server {

std::error_code DiskTable::add(Disk disk) {
  std::lock_guard lock(mutex_);
  if (disks_.contains(disk.name)) return std::make_error_code(std::errc::file_exists);
  std::string name = disk.name;
  disks_.emplace(std::move(name), std::move(disk));
  return {};
}

std::error_code DiskTable::remove(std::string_view name) {
  std::lock_guard lock(mutex_);
  auto it = disks_.find(name);
  if (it == disks_.end()) return std::make_error_code(std::errc::no_such_device_or_address);
  disks_.erase(it);
  return {};
}

std::optional<Disk> DiskTable::find(std::string_view name) const {
  std::lock_guard lock(mutex_);
  auto it = disks_.find(name);
  if (it == disks_.end()) return std::nullopt;
  return it->second;
}

std::vector<Disk> DiskTable::list() const {
  std::lock_guard lock(mutex_);
  std::vector<Disk> out;
  for (const auto& [name, d] : disks_) out.push_back(d);
  return out;
}

Result<std::shared_ptr<block::Device>> open_disk(const DiskSpec& spec, std::string* message) {
  auto say = [&](std::string text) {
    if (message) *message = std::move(text);
  };
  if (spec.format != DiskFormat::raw) {
    say(fmt::format("disk {}: format qcow2 is not supported yet; use a raw image", spec.name));
    return std::make_error_code(std::errc::not_supported);
  }
  block::RawFileOptions options;
  options.read_only = spec.read_only;
  options.direct = spec.cache == CacheMode::none;
  std::string detail;
  auto device = block::open_raw_file(spec.path, options, &detail);
  if (!device) {
    std::error_code ec = device.error();
    std::string hint = "check the path";
    if (ec == std::errc::permission_denied || ec == std::errc::read_only_file_system) {
      hint = spec.read_only ? "check the file's permissions" : "check the permissions, or add ,readonly";
    } else if (ec == std::errc::invalid_argument && spec.cache == CacheMode::none) {
      hint = "the file system may not support O_DIRECT; try cache=writeback";
    } else if (ec == std::errc::is_a_directory) {
      hint = "give a file or a block device";
    }
    if (!detail.empty()) say(fmt::format("disk {}: {}", spec.name, detail));
    else say(fmt::format("disk {}: cannot open '{}': {} ({})", spec.name, spec.path, ec.message(), hint));
    return ec;
  }
  return device;
}

}  // namespace fleece::server
