// Qcow2Image::Entry: a decoded L2 entry, shared by the files that make up
// Qcow2Image (an implementation detail, not for other classes).
#pragma once

#include "cow/qcow2_image.hpp"

#include <cstdint>

namespace fleece::cow {

enum class EntryKind { unallocated, zero, data, compressed };

struct Qcow2Image::Entry {
  EntryKind kind = EntryKind::unallocated;
  uint64_t host = 0;  // data clusters, and zero clusters that keep their allocation
};

}  // namespace fleece::cow
