#include "block/buffer.hpp"

#include <bit>
#include <cstring>
#include <new>
#include <stdexcept>
#include <utility>

namespace fleece::block {

namespace {

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

// Index of the size class holding capacity c (a power of two >= 4096).
std::size_t class_index(std::size_t capacity) {
  return static_cast<std::size_t>(std::countr_zero(capacity)) - 12;
}

}  // namespace

AlignedBuffer::AlignedBuffer(std::size_t size) : size_(size), capacity_(round_up(size, kAlignment)) {
  if (capacity_ == 0) return;
  // aligned_alloc requires the size to be a multiple of the alignment: it is.
  data_.reset(static_cast<std::byte*>(std::aligned_alloc(kAlignment, capacity_)));
  if (!data_) throw std::bad_alloc();
}

AlignedBuffer AlignedBuffer::zeroed(std::size_t size) {
  AlignedBuffer b(size);
  if (b.capacity_ != 0) std::memset(b.data(), 0, b.capacity_);
  return b;
}

AlignedBuffer::AlignedBuffer(AlignedBuffer&& other) noexcept
    : data_(std::move(other.data_)),
      size_(std::exchange(other.size_, 0)),
      capacity_(std::exchange(other.capacity_, 0)) {}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& other) noexcept {
  data_ = std::move(other.data_);
  size_ = std::exchange(other.size_, 0);
  capacity_ = std::exchange(other.capacity_, 0);
  return *this;
}

void AlignedBuffer::resize(std::size_t size) {
  if (size > capacity_) throw std::length_error("AlignedBuffer::resize beyond capacity");
  size_ = size;
}

PooledBuffer::PooledBuffer(PooledBuffer&& other) noexcept
    : buffer_(std::move(other.buffer_)), pool_(std::exchange(other.pool_, nullptr)) {}

PooledBuffer& PooledBuffer::operator=(PooledBuffer&& other) noexcept {
  if (this != &other) {
    if (pool_ && buffer_.capacity() != 0) pool_->give_back(std::move(buffer_));
    buffer_ = std::move(other.buffer_);
    pool_ = std::exchange(other.pool_, nullptr);
  }
  return *this;
}

PooledBuffer::~PooledBuffer() {
  if (pool_ && buffer_.capacity() != 0) pool_->give_back(std::move(buffer_));
}

AlignedBuffer PooledBuffer::release() noexcept {
  pool_ = nullptr;
  return std::move(buffer_);
}

BufferPool::BufferPool() : BufferPool(Options{}) {}
BufferPool::BufferPool(Options options) : options_(options) {}

BufferPool& BufferPool::shared() {
  // Leaked on purpose: PooledBuffers held by static objects may be destroyed
  // after any function-local static would be.
  static BufferPool* pool = new BufferPool();
  return *pool;
}

PooledBuffer BufferPool::acquire(std::size_t size) {
  std::size_t capacity = std::bit_ceil(std::max<std::size_t>(size, AlignedBuffer::kAlignment));
  if (capacity <= options_.max_pooled_size) {
    SizeClass& c = classes_[class_index(capacity)];
    std::unique_lock lock(c.mutex);
    if (!c.free.empty()) {
      AlignedBuffer b = std::move(c.free.back());
      c.free.pop_back();
      lock.unlock();
      b.resize(size);
      return PooledBuffer(std::move(b), this);
    }
  }
  AlignedBuffer b(capacity);
  b.resize(size);
  return PooledBuffer(std::move(b), this);
}

void BufferPool::give_back(AlignedBuffer buffer) noexcept {
  std::size_t capacity = buffer.capacity();
  if (capacity < AlignedBuffer::kAlignment || capacity > options_.max_pooled_size ||
      !std::has_single_bit(capacity))
    return;  // freed here
  SizeClass& c = classes_[class_index(capacity)];
  std::lock_guard lock(c.mutex);
  if (c.free.size() >= options_.max_free_per_class) return;
  try {
    c.free.push_back(std::move(buffer));
  } catch (...) {  // vector growth failed: just free the buffer
  }
}

std::size_t BufferPool::free_count() const {
  std::size_t n = 0;
  for (const SizeClass& c : classes_) {
    std::lock_guard lock(c.mutex);
    n += c.free.size();
  }
  return n;
}

}  // namespace fleece::block
