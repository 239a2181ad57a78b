#include "server/disk_table.hpp"

#include "cow/backing_chain.hpp"
#include "cow/cbw_filter.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
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

namespace {

std::string hint_for(const DiskSpec& spec, std::error_code ec) {
  if (ec == std::errc::permission_denied || ec == std::errc::read_only_file_system) {
    return spec.read_only ? "check the file's permissions" : "check the permissions, or add ,readonly";
  }
  if (ec == std::errc::invalid_argument && spec.cache == CacheMode::none) {
    return "the file system may not support O_DIRECT; try cache=writeback";
  }
  if (ec == std::errc::is_a_directory) return "give a file or a block device";
  return "check the path";
}

// Runs BackingChain::open to completion on a private event loop.
Result<std::shared_ptr<cow::BackingChain>> open_chain(const DiskSpec& spec, std::string* why) {
  namespace asio = boost::asio;
  asio::io_context io;
  const std::string format = spec.format == DiskFormat::qcow2 ? "qcow2" : "raw";
  cow::ChainOpenOptions options{.read_only = spec.read_only, .direct = spec.cache == CacheMode::none};
  auto done = asio::co_spawn(io, cow::BackingChain::open(spec.path, format, options, why), asio::use_future);
  io.run();
  return done.get();
}

}  // namespace

Result<Disk> open_disk(const DiskSpec& spec, std::string* message) {
  auto say = [&](std::string text) {
    if (message) *message = std::move(text);
  };
  std::string detail;
  auto chain = open_chain(spec, &detail);
  if (!chain) {
    std::error_code ec = chain.error();
    if (!detail.empty()) say(fmt::format("disk {}: {}", spec.name, detail));
    else say(fmt::format("disk {}: cannot open '{}': {} ({})", spec.name, spec.path, ec.message(), hint_for(spec, ec)));
    return ec;
  }
  Disk disk{spec.name, spec, *chain, nullptr, nullptr};
  cow::CbwFilterOptions filter_options{.disk_path = spec.path,
                                       .disk_format = spec.format == DiskFormat::qcow2 ? "qcow2" : "raw"};
  disk.filter = std::make_shared<cow::CbwFilter>(disk.chain->device(), std::move(filter_options));
  disk.device = disk.filter;
  return disk;
}

}  // namespace fleece::server
