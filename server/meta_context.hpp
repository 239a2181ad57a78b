// MetaContext: one NBD metadata context an export offers besides
// base:allocation, which every export answers from its Device's
// block_status. Examples: qemu:allocation-depth of a backing chain,
// qemu:dirty-bitmap:NAME of an incremental-backup bitmap.
//
// Contract of extents(): describe [offset, offset + length) from offset on as
// runs of (length, flags) in the context's own flag meaning. The runs may
// stop short of the end (the client asks again) but cover at least one byte;
// the connection shapes them for the wire (32-bit lengths, REQ_ONE, merging).
// Called from any connection's thread, concurrently.
#pragma once

#include "block/device.hpp"
#include "nbd/reply.hpp"

#include <cstdint>
#include <string>
#include <system_error>
#include <vector>

namespace fleece::server {

class MetaContext {
 public:
  virtual ~MetaContext() = default;
  virtual const std::string& name() const = 0;  // the full context name
  virtual block::Task<std::error_code> extents(uint64_t offset, uint64_t length,
                                               std::vector<nbd::RawExtent>& out) = 0;
};

}  // namespace fleece::server
