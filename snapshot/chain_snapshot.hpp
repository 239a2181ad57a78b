// take_chain_snapshot: a live external snapshot (the core of QMP
// blockdev-snapshot-sync).
//
// Creates a qcow2 overlay at options.file whose backing file is the chain's
// current active layer (name relative to the overlay's directory when they
// share it, else absolute; backing format recorded), and makes it the
// active layer: from then on guest writes land in the overlay and the old
// active layer is flushed and reopened read-only, unchanged for good.
//
// The swap must not split a guest write, so it runs with writes drained:
// pass `quiesce` (drain = e.g. CbwFilter::close_gate, resume = open_gate) or
// call the function with writes already drained and quiesce empty. The
// overlay file is made before draining, so writes are held only for a flush
// and a reopen. On failure nothing changes (a file it created is removed)
// and *why says what went wrong.
//
// The file must not exist yet: fleece never overwrites an image that could
// be a member of some chain.
#pragma once

#include "block/device.hpp"
#include "cow/backing_chain.hpp"

#include <functional>
#include <string>
#include <system_error>

namespace fleece::snapshot {

struct ChainSnapshotOptions {
  std::string file;                 // the new overlay
  std::string format = "qcow2";     // the only one fleece creates
  uint32_t cluster_size = 64 * 1024;
};

struct Quiesce {
  std::function<block::Task<void>()> drain;  // returns once writes are drained and held
  std::function<void()> resume;
};

block::Task<std::error_code> take_chain_snapshot(std::shared_ptr<cow::BackingChain> chain,
                                                 ChainSnapshotOptions options,
                                                 std::string* why = nullptr,
                                                 Quiesce quiesce = {});

}  // namespace fleece::snapshot
