// ZeroedVector<T>: a std::vector of trivial T whose storage comes from
// calloc and whose elements are default-initialised, so a new vector of n
// elements is all zero without a pass over it. glibc serves large callocs
// with fresh mmap'd pages that it knows are zero: a 32 MiB dirty bitmap of a
// 1 TiB disk then costs neither a memset on the thread that makes it nor
// memory until its granules are written.
//
// Only construction with a size (or resize()) relies on this; assign(),
// copies and fills behave as in any vector.
#pragma once

#include "util/byte_buffer.hpp"  // DefaultInitAllocator

#include <cstddef>
#include <cstdlib>
#include <new>
#include <type_traits>
#include <vector>

namespace fleece {

// DefaultInitAllocator's default-initialising construct(), over calloc.
template <class T>
struct CallocAllocator : DefaultInitAllocator<T> {
  static_assert(std::is_trivial_v<T>);
  template <class U>
  struct rebind {
    using other = CallocAllocator<U>;
  };
  CallocAllocator() = default;
  template <class U>
  CallocAllocator(const CallocAllocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    if (void* p = std::calloc(n, sizeof(T))) return static_cast<T*>(p);
    throw std::bad_alloc();
  }
  void deallocate(T* p, std::size_t) noexcept { std::free(p); }
};

template <class T>
using ZeroedVector = std::vector<T, CallocAllocator<T>>;

}  // namespace fleece
