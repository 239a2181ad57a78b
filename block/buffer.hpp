// AlignedBuffer and BufferPool: memory for disk I/O.
//
// AlignedBuffer owns a block of memory aligned to 4096 bytes, so it can be
// handed to an O_DIRECT file (cache=none) as well as to a buffered one. Its
// capacity is a multiple of 4096; size() is what the user asked for and may
// be changed with resize() up to capacity(). Contents start uninitialized
// (use zeroed() when it matters): a read buffer is overwritten anyway.
//
// BufferPool recycles AlignedBuffers of power-of-two capacities from 4 KiB to
// max_pooled_size so the hot path does not hit malloc/free (and the page
// faults of fresh large allocations) for every request. acquire() returns a
// PooledBuffer that goes back to its pool when destroyed. The pool is
// thread-safe (one mutex per size class, held for a push or a pop); a buffer
// may be returned on a different thread than the one that took it. The pool
// must outlive its PooledBuffers: BufferPool::shared() is never destroyed.
#pragma once

#include <array>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

namespace fleece::block {

class AlignedBuffer {
 public:
  static constexpr std::size_t kAlignment = 4096;

  AlignedBuffer() = default;
  // Throws std::bad_alloc when memory is exhausted.
  explicit AlignedBuffer(std::size_t size);
  static AlignedBuffer zeroed(std::size_t size);

  AlignedBuffer(AlignedBuffer&& other) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() = default;

  std::byte* data() noexcept { return data_.get(); }
  const std::byte* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }
  bool empty() const noexcept { return size_ == 0; }
  std::span<std::byte> span() noexcept { return {data_.get(), size_}; }
  std::span<const std::byte> span() const noexcept { return {data_.get(), size_}; }

  // Changes size() without touching contents; size must be <= capacity().
  void resize(std::size_t size);

 private:
  struct Free {
    void operator()(std::byte* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<std::byte, Free> data_;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

class BufferPool;

// A buffer on loan from a BufferPool; returns itself on destruction.
class PooledBuffer {
 public:
  PooledBuffer() = default;
  PooledBuffer(AlignedBuffer buffer, BufferPool* pool) noexcept
      : buffer_(std::move(buffer)), pool_(pool) {}
  PooledBuffer(PooledBuffer&& other) noexcept;
  PooledBuffer& operator=(PooledBuffer&& other) noexcept;
  ~PooledBuffer();

  std::byte* data() noexcept { return buffer_.data(); }
  const std::byte* data() const noexcept { return buffer_.data(); }
  std::size_t size() const noexcept { return buffer_.size(); }
  std::size_t capacity() const noexcept { return buffer_.capacity(); }
  std::span<std::byte> span() noexcept { return buffer_.span(); }
  std::span<const std::byte> span() const noexcept { return buffer_.span(); }
  void resize(std::size_t size) { buffer_.resize(size); }

  // Keeps the memory: it will not go back to the pool.
  AlignedBuffer release() noexcept;

 private:
  AlignedBuffer buffer_;
  BufferPool* pool_ = nullptr;
};

class BufferPool {
 public:
  struct Options {
    std::size_t max_pooled_size = 4u << 20;  // larger buffers are not kept
    std::size_t max_free_per_class = 64;     // bounds the memory a pool holds
  };

  BufferPool();
  explicit BufferPool(Options options);
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // The process-wide pool.
  static BufferPool& shared();

  // A buffer with size() == size and capacity() the next power of two
  // (at least 4096). Contents are uninitialized. Throws std::bad_alloc.
  PooledBuffer acquire(std::size_t size);

  // Takes a buffer back (any AlignedBuffer whose capacity is a pooled size
  // class is kept, up to max_free_per_class per class; others are freed).
  void give_back(AlignedBuffer buffer) noexcept;

  // Buffers currently held for reuse (all classes); for tests and stats.
  std::size_t free_count() const;

 private:
  static constexpr std::size_t kClasses = 24;  // 4 KiB << 23 = 32 GiB: more than ever pooled
  struct SizeClass {
    mutable std::mutex mutex;
    std::vector<AlignedBuffer> free;
  };
  Options options_;
  std::array<SizeClass, kClasses> classes_;
};

}  // namespace fleece::block
