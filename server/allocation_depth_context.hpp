// AllocationDepthContext: the NBD metadata context qemu:allocation-depth of
// a disk's backing chain, as qemu-nbd -A / QEMU's NBD server offer it
// (docs/interop/nbd.txt): the status value of an extent is the depth of the
// layer that provides its data, 0 = unallocated in every layer, 1 = the
// active layer, 2 = the layer below it, and so on. A raw layer counts as
// allocated everywhere, as in QEMU.
//
// The depth follows the chain live: after a snapshot or a commit the next
// query answers for the chain as it is then.
#pragma once

#include "server/meta_context.hpp"

#include <memory>
#include <string>
#include <vector>

namespace fleece::cow {
class BackingChain;
}

namespace fleece::server {

struct Disk;

inline constexpr const char* kContextAllocationDepth = "qemu:allocation-depth";

class AllocationDepthContext final : public MetaContext {
 public:
  explicit AllocationDepthContext(std::shared_ptr<cow::BackingChain> chain);

  const std::string& name() const override { return name_; }
  block::Task<std::error_code> extents(uint64_t offset, uint64_t length,
                                       std::vector<nbd::RawExtent>& out) override;

 private:
  std::shared_ptr<cow::BackingChain> chain_;
  std::string name_ = kContextAllocationDepth;
};

// The contexts every live export of `disk` offers besides base:allocation.
// Frozen views (fleeces) are not live exports and build their own.
std::vector<std::shared_ptr<MetaContext>> disk_export_contexts(const Disk& disk);

}  // namespace fleece::server
