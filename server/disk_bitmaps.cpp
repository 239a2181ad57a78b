#include "server/disk_bitmaps.hpp"

#include "server/disk_table.hpp"
#include "util/log.hpp"

namespace fleece::server {

DiskBitmaps::DiskBitmaps(std::shared_ptr<cow::BitmapFilter> filter,
                         std::unique_ptr<cow::BitmapStore> store, bool read_only,
                         std::string why_no_store)
    : filter_(std::move(filter)), store_(std::move(store)), read_only_(read_only),
      why_no_store_(std::move(why_no_store)) {}

bool DiskBitmaps::can_persist(std::string* why) const {
  if (read_only_) {
    if (why) *why = "the node is read-only";
    return false;
  }
  if (!store_) {
    if (why) *why = why_no_store_.empty() ? std::string("no bitmap store") : why_no_store_;
    return false;
  }
  return true;
}

std::vector<DiskBitmaps::Entry> DiskBitmaps::list() const {
  std::vector<Entry> out;
  for (auto& b : filter_->bitmaps()) out.push_back(Entry{b->name(), b, false, false});
  std::lock_guard lk(mu_);
  for (const auto& [name, b] : frozen_) out.push_back(Entry{name, b, true, false});
  for (auto& e : out) {
    auto it = busy_.find(e.name);
    e.busy = it != busy_.end() && it->second > 0;
  }
  return out;
}

std::optional<DiskBitmaps::Entry> DiskBitmaps::find(std::string_view name) const {
  for (auto& e : list()) {
    if (e.name == name) return e;
  }
  return std::nullopt;
}

std::error_code DiskBitmaps::add(std::shared_ptr<cow::DirtyBitmap> bitmap) {
  std::lock_guard lk(mu_);
  if (frozen_.contains(bitmap->name())) return std::make_error_code(std::errc::file_exists);
  return filter_->attach(std::move(bitmap));
}

std::shared_ptr<cow::DirtyBitmap> DiskBitmaps::remove(std::string_view name) {
  std::lock_guard lk(mu_);
  if (auto it = frozen_.find(name); it != frozen_.end()) {
    auto b = it->second;
    frozen_.erase(it);
    return b;
  }
  return filter_->detach(name);
}

std::error_code DiskBitmaps::add_frozen(std::string name, std::shared_ptr<cow::DirtyBitmap> bitmap) {
  std::lock_guard lk(mu_);
  if (frozen_.contains(name) || filter_->find(name)) return std::make_error_code(std::errc::file_exists);
  frozen_.emplace(std::move(name), std::move(bitmap));
  return {};
}

std::shared_ptr<void> DiskBitmaps::hold(const std::string& name) {
  {
    std::lock_guard lk(mu_);
    ++busy_[name];
  }
  std::weak_ptr<DiskBitmaps> weak = weak_from_this();
  return std::shared_ptr<void>(nullptr, [weak, name](void*) {
    auto self = weak.lock();
    if (!self) return;
    std::lock_guard lk(self->mu_);
    if (auto it = self->busy_.find(name); it != self->busy_.end() && --it->second <= 0) self->busy_.erase(it);
  });
}

block::Task<std::error_code> DiskBitmaps::persist() {
  if (!can_persist(nullptr)) co_return std::error_code{};
  std::vector<std::shared_ptr<cow::DirtyBitmap>> all;
  for (const auto& e : list()) {
    if (!e.bitmap->persistent()) continue;
    if (!e.frozen) {
      all.push_back(e.bitmap);
      continue;
    }
    // A frozen bitmap is stored under its listed name (NAME@ID), disabled.
    auto copy = cow::DirtyBitmap::create(e.name, e.bitmap->size(), e.bitmap->granularity());
    if (!copy) continue;
    (*copy)->merge_from(*e.bitmap);
    (*copy)->set_enabled(false);
    (*copy)->set_persistent(true);
    all.push_back(*copy);
  }
  co_return co_await store_->store(all);
}

block::Task<std::error_code> DiskBitmaps::unstore(std::string name) {
  if (!can_persist(nullptr)) co_return std::error_code{};
  std::error_code ec = co_await store_->remove(name);
  if (ec == std::errc::no_such_file_or_directory) ec = {};
  co_return ec;
}

block::Task<void> persist_disk_bitmaps(DiskTable& table) {
  const std::vector<Disk> disks = table.list();
  for (const auto& disk : disks) {
    if (!disk.bitmaps) continue;
    if (auto ec = co_await disk.bitmaps->persist()) {
      FLEECE_LOG_ERROR("bitmap", "disk {}: storing its dirty bitmaps failed: {} (they are lost: take a full "
                       "backup next)", disk.name, ec.message());
    }
  }
}

}  // namespace fleece::server
