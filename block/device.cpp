#include "block/device.hpp"

namespace fleece::block {

Task<std::error_code> Device::cache(uint64_t, uint64_t) { co_return std::error_code{}; }

std::optional<FileRange> Device::file_range(uint64_t, uint64_t) const { return std::nullopt; }

}  // namespace fleece::block
