#include "server/allocation_depth_context.hpp"

#include "cow/backing_chain.hpp"
#include "server/disk_table.hpp"

namespace fleece::server {

AllocationDepthContext::AllocationDepthContext(std::shared_ptr<cow::BackingChain> chain)
    : chain_(std::move(chain)) {}

block::Task<std::error_code> AllocationDepthContext::extents(uint64_t offset, uint64_t length,
                                                             std::vector<nbd::RawExtent>& out) {
  auto device = chain_->device();
  std::vector<block::Extent> status;
  if (auto ec = co_await device->block_status(offset, length, status)) co_return ec;
  for (const auto& e : status) {
    if (e.length == 0) continue;
    if (!out.empty() && out.back().flags == e.depth)
      out.back().length += e.length;
    else
      out.push_back({e.length, e.depth});
  }
  if (out.empty()) co_return std::make_error_code(std::errc::io_error);
  co_return std::error_code{};
}

std::vector<std::shared_ptr<MetaContext>> disk_export_contexts(const Disk& disk) {
  std::vector<std::shared_ptr<MetaContext>> out;
  if (disk.chain) out.push_back(std::make_shared<AllocationDepthContext>(disk.chain));
  return out;
}

}  // namespace fleece::server
