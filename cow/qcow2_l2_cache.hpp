// Qcow2L2Cache: the L2 tables of one qcow2 image held in memory, bounded
// by a byte limit like QEMU's l2-cache-size.
//
// Tables are found by L1 index and handed out as shared pointers. Whoever
// holds one across a suspension pins it: a table is dropped only when the
// cache is its sole owner, it is clean (its changes written back) and no
// write-back of it is in flight. Over the limit, the least recently used
// such tables go first; dirty and pinned tables stay, so the cache may run
// over its limit until they are written back (the image writes back early
// when that happens) and released.
//
// Whoever loads a table from the file must check evictions() before and
// after the read: a table dropped meanwhile may have been written back
// after the read began, so the bytes read may be older than the file's.
//
// Not thread-safe: the owning image's metadata mutex guards every call, and
// every access to a table's bytes. Releasing a pin needs no lock.
#pragma once

#include "cow/qcow2_meta_table.hpp"

#include <cstdint>
#include <list>
#include <memory>
#include <unordered_map>
#include <vector>

namespace fleece::cow {

class Qcow2L2Cache {
 public:
  using Table = std::shared_ptr<Qcow2MetaTable>;

  // limit_bytes below one table's size still keeps one table.
  explicit Qcow2L2Cache(uint64_t limit_bytes = UINT64_MAX) : limit_(limit_bytes) {}

  void set_limit(uint64_t bytes) { limit_ = bytes; }
  uint64_t limit() const { return limit_; }
  uint64_t bytes() const { return bytes_; }
  std::size_t tables() const { return slots_.size(); }
  uint64_t evictions() const { return evictions_; }

  // The cached table (now the most recently used), or null.
  Table find(uint64_t l1_index);
  // Caches t for l1_index (or returns the table already cached there),
  // then drops tables until within the limit (never the one returned).
  Table insert(uint64_t l1_index, Table t);
  // Drops least recently used droppable tables until within the limit.
  void trim();
  // Over the limit with a dirty table that writing back would let go.
  bool over_limit_dirty() const;

  // Write-back: the dirty range of every dirty table (which becomes clean
  // and stays cached until end_writeback()).
  void take_dirty(std::size_t align, std::vector<Qcow2MetaWrite>& out);
  void end_writeback();
  void mark_all_dirty();

 private:
  struct Slot {
    Table table;
    std::list<uint64_t>::iterator lru;
    bool writing = false;
  };
  void trim_except(uint64_t keep_index);

  uint64_t limit_;
  uint64_t bytes_ = 0;
  uint64_t evictions_ = 0;
  std::unordered_map<uint64_t, Slot> slots_;
  std::list<uint64_t> lru_;  // most recently used first
};

}  // namespace fleece::cow
