// NoFlushDevice: a Device whose flushes and FUA flags stop here (QEMU's
// cache.no-flush=on), for files nobody reads after a crash.
//
// fleece's copy-before-write stores are such files: a point in time lives
// only as long as the server, and stale stores are deleted at start-up. Their
// writes must reach the page cache (qemu-img reading the store sees them), but
// never stable storage. Without this, every guest FLUSH during a fleece also
// waited for fdatasync of everything copied into the stores, and the qcow2
// layer's ordering barriers cost an fdatasync each.
//
// Contract: as Device, except that flush() succeeds without flushing below,
// and writes, write_zeroes and trims go below without fua. Everything else
// is passed through unchanged, file_range() included.
#pragma once

#include "block/device.hpp"

#include <memory>

namespace fleece::block {

std::shared_ptr<Device> without_flush(std::shared_ptr<Device> below);

}  // namespace fleece::block
