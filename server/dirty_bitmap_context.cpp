#include "server/dirty_bitmap_context.hpp"

namespace fleece::server {

namespace {
// Runs per reply at most: a client asking for a whole 1 TiB disk at 64 KiB
// granularity gets the first runs and asks again (MetaContext allows it).
constexpr std::size_t kMaxRuns = 64 * 1024;
}  // namespace

DirtyBitmapContext::DirtyBitmapContext(std::string exported_name,
                                       std::shared_ptr<cow::DirtyBitmap> bitmap,
                                       std::shared_ptr<void> hold)
    : name_(std::string(kContextDirtyBitmapPrefix) + exported_name),
      bitmap_(std::move(bitmap)),
      hold_(std::move(hold)) {}

block::Task<std::error_code> DirtyBitmapContext::extents(uint64_t offset, uint64_t length,
                                                         std::vector<nbd::RawExtent>& out) {
  for (const cow::DirtyExtent& e : bitmap_->extents(offset, length)) {
    if (out.size() >= kMaxRuns) break;
    out.push_back(nbd::RawExtent{e.length, e.dirty ? cow::kDirtyExtentFlag : 0u});
  }
  if (out.empty()) co_return std::make_error_code(std::errc::invalid_argument);  // past the end
  co_return std::error_code{};
}

}  // namespace fleece::server
