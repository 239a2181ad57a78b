#include "server/disk_table.hpp"

#include "cow/backing_chain.hpp"
#include "cow/bitmap_filter.hpp"
#include "cow/bitmap_sidecar.hpp"
#include "cow/cbw_filter.hpp"
#include "cow/qcow2_bitmaps.hpp"
#include "server/disk_bitmaps.hpp"
#include "util/log.hpp"

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

struct OpenedStack {
  std::shared_ptr<cow::BackingChain> chain;
  std::unique_ptr<cow::BitmapStore> bitmap_store;  // null: see bitmap_why
  std::string bitmap_why;
};

// The persistent bitmaps of the chain's active layer: opened before
// anything writes (the store marks them in use first). A store that cannot
// be opened costs the bitmaps, not the disk: the reason is kept and logged.
block::Task<void> open_bitmap_store(const DiskSpec* spec, OpenedStack* out) {
  const auto layers = out->chain->layers();
  const bool writable = !spec->read_only;
  std::string why;
  if (!layers.empty() && layers.front().qcow2) {
    std::shared_ptr<cow::Qcow2Image> image = layers.front().qcow2;
    auto store = co_await cow::Qcow2BitmapStore::open(image, &why);
    if (store) out->bitmap_store = std::move(*store);
    else out->bitmap_why = fmt::format("the bitmaps of '{}' are unusable: {}", layers.front().path, why);
    co_return;
  }
  const std::string path = cow::BitmapSidecar::path_for(layers.empty() ? spec->path : layers.front().path);
  const uint64_t size = out->chain->device()->size();
  auto store = co_await cow::BitmapSidecar::open(path, size, writable, &why);
  if (!store && writable) {  // a damaged file was moved aside: start afresh
    std::string again;
    store = co_await cow::BitmapSidecar::open(path, size, writable, &again);
  }
  if (store) out->bitmap_store = std::move(*store);
  else out->bitmap_why = fmt::format("the bitmap file '{}' is unusable: {}", path, why);
}

block::Task<Result<OpenedStack>> open_stack(const DiskSpec* spec, std::string* why) {
  const std::string format = spec->format == DiskFormat::qcow2 ? "qcow2" : "raw";
  cow::ChainOpenOptions options{.read_only = spec->read_only,
                                .direct = spec->cache == CacheMode::none,
                                .keep_bitmaps = true,
                                .l2_cache_bytes = spec->l2_cache_bytes};
  const std::string path = spec->path;
  auto chain = co_await cow::BackingChain::open(path, format, options, why);
  if (!chain) co_return chain.error();
  OpenedStack out;
  out.chain = *chain;
  co_await open_bitmap_store(spec, &out);
  co_return out;
}

// Runs open_stack to completion on a private event loop.
Result<OpenedStack> open_stack_now(const DiskSpec& spec, std::string* why) {
  namespace asio = boost::asio;
  asio::io_context io;
  auto done = asio::co_spawn(io, open_stack(&spec, why), asio::use_future);
  io.run();
  return done.get();
}

}  // namespace

Result<Disk> open_disk(const DiskSpec& spec, std::string* message) {
  auto say = [&](std::string text) {
    if (message) *message = std::move(text);
  };
  std::string detail;
  auto opened = open_stack_now(spec, &detail);
  if (!opened) {
    std::error_code ec = opened.error();
    if (!detail.empty()) say(fmt::format("disk {}: {}", spec.name, detail));
    else say(fmt::format("disk {}: cannot open '{}': {} ({})", spec.name, spec.path, ec.message(), hint_for(spec, ec)));
    return ec;
  }
  Disk disk{spec.name, spec, opened->chain, nullptr, nullptr, nullptr};
  auto bitmap_filter = std::make_shared<cow::BitmapFilter>(disk.chain->device());
  if (!opened->bitmap_store) FLEECE_LOG_WARN("disk", "disk {}: {}", spec.name, opened->bitmap_why);
  else {
    for (auto& b : opened->bitmap_store->loaded()) {
      if (b->inconsistent())
        FLEECE_LOG_WARN("disk", "disk {}: dirty bitmap '{}' was in use when the disk was last closed: "
                        "inconsistent, never trusted (remove it, and take a full backup)", spec.name, b->name());
      bitmap_filter->attach(b);
    }
  }
  disk.bitmaps = std::make_shared<DiskBitmaps>(bitmap_filter, std::move(opened->bitmap_store), spec.read_only,
                                               opened->bitmap_why);
  cow::CbwFilterOptions filter_options{.disk_path = spec.path,
                                       .disk_format = spec.format == DiskFormat::qcow2 ? "qcow2" : "raw"};
  disk.filter = std::make_shared<cow::CbwFilter>(bitmap_filter, std::move(filter_options));
  disk.device = disk.filter;
  return disk;
}

}  // namespace fleece::server
