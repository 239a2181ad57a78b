#include "cow/bitmap_filter.hpp"

#include <algorithm>

namespace fleece::cow {

using block::Task;

BitmapFilter::BitmapFilter(std::shared_ptr<block::Device> below) : below_(std::move(below)) {}

std::error_code BitmapFilter::attach(std::shared_ptr<DirtyBitmap> bitmap) {
  if (!bitmap || bitmap->size() != below_->size())
    return make_error_code(std::errc::invalid_argument);
  std::lock_guard g(mu_);
  for (const auto& b : bitmaps_)
    if (b->name() == bitmap->name()) return make_error_code(std::errc::file_exists);
  bitmaps_.push_back(std::move(bitmap));
  return {};
}

std::shared_ptr<DirtyBitmap> BitmapFilter::detach(std::string_view name) {
  std::lock_guard g(mu_);
  auto it = std::find_if(bitmaps_.begin(), bitmaps_.end(),
                         [&](const auto& b) { return b->name() == name; });
  if (it == bitmaps_.end()) return nullptr;
  auto b = std::move(*it);
  bitmaps_.erase(it);
  return b;
}

std::shared_ptr<DirtyBitmap> BitmapFilter::find(std::string_view name) const {
  std::lock_guard g(mu_);
  for (const auto& b : bitmaps_)
    if (b->name() == name) return b;
  return nullptr;
}

std::vector<std::shared_ptr<DirtyBitmap>> BitmapFilter::bitmaps() const {
  std::lock_guard g(mu_);
  return bitmaps_;
}

Result<std::shared_ptr<DirtyBitmap>> BitmapFilter::swap(std::string_view name) {
  auto current = find(name);
  if (!current) return make_error_code(std::errc::no_such_file_or_directory);
  auto fresh = current->fresh_like();
  fresh->set_enabled(current->enabled());
  return swap(name, std::move(fresh));
}

Result<std::shared_ptr<DirtyBitmap>> BitmapFilter::swap(std::string_view name,
                                                        std::shared_ptr<DirtyBitmap> fresh) {
  if (!fresh || fresh->name() != name || fresh->size() != below_->size())
    return make_error_code(std::errc::invalid_argument);
  std::lock_guard g(mu_);
  auto it = std::find_if(bitmaps_.begin(), bitmaps_.end(),
                         [&](const auto& b) { return b->name() == name; });
  if (it == bitmaps_.end()) return make_error_code(std::errc::no_such_file_or_directory);
  if ((*it)->inconsistent()) return make_error_code(std::errc::operation_not_permitted);
  // Marking takes mu_ too: no write marks between the freeze and the replace.
  auto old = std::exchange(*it, std::move(fresh));
  old->freeze();
  return old;
}

void BitmapFilter::mark(uint64_t offset, uint64_t length) {
  std::lock_guard g(mu_);
  for (const auto& b : bitmaps_) b->mark(offset, length);  // disabled ones ignore it
}

Task<std::error_code> BitmapFilter::read(uint64_t offset, std::span<std::byte> out) {
  co_return co_await below_->read(offset, out);
}

Task<std::error_code> BitmapFilter::write(uint64_t offset, std::span<const std::byte> data,
                                          block::WriteFlags flags) {
  mark(offset, data.size());
  co_return co_await below_->write(offset, data, flags);
}

Task<std::error_code> BitmapFilter::write_zeroes(uint64_t offset, uint64_t length,
                                                 block::ZeroFlags flags) {
  mark(offset, length);
  co_return co_await below_->write_zeroes(offset, length, flags);
}

Task<std::error_code> BitmapFilter::trim(uint64_t offset, uint64_t length,
                                         block::WriteFlags flags) {
  mark(offset, length);
  co_return co_await below_->trim(offset, length, flags);
}

Task<std::error_code> BitmapFilter::flush() { co_return co_await below_->flush(); }

Task<std::error_code> BitmapFilter::cache(uint64_t offset, uint64_t length) {
  co_return co_await below_->cache(offset, length);
}

Task<std::error_code> BitmapFilter::block_status(uint64_t offset, uint64_t length,
                                                 std::vector<block::Extent>& out) {
  co_return co_await below_->block_status(offset, length, out);
}

}  // namespace fleece::cow
