// resident(): whether a file range is wholly in the page cache, so that
// handing it to sendfile(2) will not wait for the disk on an event-loop
// thread. Uses cachestat(2) (Linux 6.5); on older kernels it answers false,
// and callers take their ordinary read path.
#pragma once

#include <cstdint>

namespace fleece::block {

bool resident(int fd, uint64_t offset, uint64_t length);

}  // namespace fleece::block
