#include "block/buffer.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

using fleece::block::AlignedBuffer;
using fleece::block::BufferPool;
using fleece::block::PooledBuffer;

namespace {
bool aligned(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 4096 == 0; }
}  // namespace

TEST_CASE("AlignedBuffer: aligned, sized, movable") {
  AlignedBuffer empty;
  CHECK(empty.size() == 0);
  CHECK(empty.data() == nullptr);
  CHECK(empty.span().empty());

  for (std::size_t size : {1u, 511u, 4096u, 4097u, 65536u, (1u << 20) + 3}) {
    AlignedBuffer b(size);
    CHECK(aligned(b.data()));
    CHECK(b.size() == size);
    CHECK(b.capacity() % 4096 == 0);
    CHECK(b.capacity() >= size);
    CHECK(b.span().size() == size);
    std::memset(b.data(), 0xab, b.capacity());  // the whole capacity is usable (ASan checks)
  }

  AlignedBuffer z = AlignedBuffer::zeroed(10000);
  for (std::byte x : z.span()) REQUIRE(x == std::byte{0});

  z.data()[5] = std::byte{7};
  std::byte* p = z.data();
  AlignedBuffer moved(std::move(z));
  CHECK(moved.data() == p);
  CHECK(moved.size() == 10000);
  CHECK(moved.data()[5] == std::byte{7});
  CHECK(z.data() == nullptr);
  CHECK(z.size() == 0);

  AlignedBuffer assigned;
  assigned = std::move(moved);
  CHECK(assigned.data() == p);

  assigned.resize(100);
  CHECK(assigned.size() == 100);
  CHECK(assigned.data()[5] == std::byte{7});  // contents kept
  assigned.resize(assigned.capacity());
  CHECK_THROWS_AS(assigned.resize(assigned.capacity() + 1), std::length_error);
}

TEST_CASE("BufferPool: reuses buffers by size class") {
  BufferPool pool;
  std::byte* first;
  {
    PooledBuffer b = pool.acquire(5000);
    CHECK(b.size() == 5000);
    CHECK(b.capacity() == 8192);
    CHECK(aligned(b.data()));
    first = b.data();
    CHECK(pool.free_count() == 0);
  }
  CHECK(pool.free_count() == 1);
  {
    // Same class (8 KiB): the same memory comes back, with the new size.
    PooledBuffer b = pool.acquire(8192);
    CHECK(b.data() == first);
    CHECK(b.size() == 8192);
    CHECK(pool.free_count() == 0);
    // Another class: fresh memory.
    PooledBuffer c = pool.acquire(100);
    CHECK(c.capacity() == 4096);
    CHECK(c.data() != first);
  }
  CHECK(pool.free_count() == 2);

  // release() keeps the memory out of the pool.
  AlignedBuffer kept = pool.acquire(4096).release();
  CHECK(pool.free_count() == 1);
  CHECK(kept.size() == 4096);

  // Moving a PooledBuffer moves its loan; only one return happens.
  {
    PooledBuffer a = pool.acquire(4096);  // the 4 KiB class is empty: fresh memory
    PooledBuffer b = std::move(a);
    CHECK(b.size() == 4096);
    CHECK(a.data() == nullptr);
  }
  CHECK(pool.free_count() == 2);
}

TEST_CASE("BufferPool: bounds what it keeps") {
  BufferPool pool(BufferPool::Options{.max_pooled_size = 64 * 1024, .max_free_per_class = 2});
  {
    std::vector<PooledBuffer> v;
    for (int i = 0; i < 5; ++i) v.push_back(pool.acquire(4096));
  }
  CHECK(pool.free_count() == 2);
  {
    PooledBuffer big = pool.acquire(1 << 20);  // above max_pooled_size: not kept
    CHECK(big.size() == (1u << 20));
    CHECK(aligned(big.data()));
  }
  CHECK(pool.free_count() == 2);
  pool.give_back(AlignedBuffer(12288));  // not a power of two: freed
  CHECK(pool.free_count() == 2);
}

TEST_CASE("BufferPool: concurrent acquire and return from several threads") {
  BufferPool pool;
  constexpr int kThreads = 4, kRounds = 2000;
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        std::size_t size = 4096u << ((i + t) % 4);
        PooledBuffer b = pool.acquire(size);
        // Each holder owns its buffer exclusively: write and check a stamp.
        std::memset(b.data(), t + 1, b.size());
        for (std::size_t k = 0; k < b.size(); k += 512)
          if (b.data()[k] != std::byte(t + 1)) ++bad;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(bad == 0);
  CHECK(pool.free_count() <= 4 * 64);
  CHECK(&BufferPool::shared() == &BufferPool::shared());
}
