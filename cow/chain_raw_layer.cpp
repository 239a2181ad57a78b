#include "cow/chain_raw_layer.hpp"

namespace fleece::cow {

block::Task<std::error_code> ChainRawLayer::block_status(uint64_t offset, uint64_t length,
                                                         std::vector<block::Extent>& out) {
  const std::size_t first = out.size();
  auto ec = co_await file_->block_status(offset, length, out);
  if (ec) co_return ec;
  for (std::size_t i = first; i < out.size(); ++i) out[i].depth = 1;
  co_return std::error_code{};
}

}  // namespace fleece::cow
