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
  // Extended L2 only: bits 0-31 say subcluster i is allocated (data at
  // host + i * subcluster size), bits 32-63 that it reads as zeroes. kind is
  // then data when a host cluster is attached, else unallocated.
  uint64_t bitmap = 0;

  // What subcluster sc reads from (extended L2 entries only).
  EntryKind subcluster(unsigned sc) const {
    if (bitmap & (uint64_t{1} << sc)) return EntryKind::data;
    if (bitmap & (uint64_t{1} << (32 + sc))) return EntryKind::zero;
    return EntryKind::unallocated;
  }
};

}  // namespace fleece::cow
