// Qcow2Refcounts: the refcount table and blocks of one qcow2 image, held
// entirely in memory, and the host-cluster allocator built on them.
//
// Allocation is O(1) amortised: freed clusters go on a free list (reused
// first, lowest first after open), otherwise a cursor hands out clusters past
// the last one in use. A cluster that needs a refcount block which does not
// exist gets one (placed at the cursor, covering itself when it can); a
// block index beyond the refcount table grows the table to a new, larger
// location (the old one is handed back through take_released() so that it is
// freed only after the header points at the new table on disk).
//
// Every change marks the touched table bytes dirty; take_writes() hands the
// dirty blocks and table ranges to the image's metadata flush, which writes
// blocks first, then the table, then (if it moved) the header.
//
// Not thread-safe: the image's metadata mutex guards it.
#pragma once

#include "cow/qcow2_meta_table.hpp"
#include "util/result.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fleece::cow {

class Qcow2Refcounts {
 public:
  Qcow2Refcounts(uint32_t cluster_bits, uint32_t refcount_order);

  uint64_t cluster_size() const { return uint64_t{1} << cluster_bits_; }
  uint64_t entries_per_block() const { return entries_per_block_; }
  uint64_t max_refcount() const { return max_refcount_; }

  // A new image: an empty table of `clusters` clusters at `table_offset`
  // (its own and every other refcount are set by the caller with set()).
  void init_empty(uint64_t table_offset, uint32_t clusters, uint64_t first_free_cluster);
  // An opened image: the table as read from the file; blocks are added with
  // load_block() for every non-zero table entry, then finish_load().
  void load_table(std::unique_ptr<Qcow2MetaTable> table);
  uint64_t table_entries() const { return table_->size() / 8; }
  uint64_t table_entry(uint64_t i) const { return table_->entry(i); }
  void load_block(uint64_t index, std::unique_ptr<Qcow2MetaTable> block);
  // Builds the free list and cursor; `file_clusters` is the file size in
  // clusters (the cursor never starts below the last referenced cluster).
  void finish_load();

  uint64_t table_offset() const { return table_->host_offset(); }
  uint32_t table_clusters() const { return uint32_t(table_->size() / cluster_size()); }
  uint64_t block_count() const;  // refcount blocks present
  uint64_t end_cluster() const { return cursor_; }  // no cluster at or past this is in use
  uint64_t allocated_clusters() const { return allocated_; }

  uint64_t get(uint64_t cluster) const;
  // Sets a refcount, creating a block (and growing the table) if needed.
  std::error_code set(uint64_t cluster, uint64_t value);
  // One free cluster with refcount 1.
  Result<uint64_t> alloc();
  // n consecutive free clusters with refcount 1, past the cursor.
  Result<uint64_t> alloc_contiguous(uint64_t n);
  // Decrements; a cluster reaching 0 goes on the free list.
  std::error_code release(uint64_t cluster);
  // The same, but a cluster reaching 0 is not handed out again while the
  // image is open (alloc() takes new clusters past it instead).
  std::error_code retire(uint64_t cluster);

  // Dirty metadata for the flush: blocks, then table ranges.
  struct Writes {
    std::vector<Qcow2MetaWrite> blocks;
    std::vector<Qcow2MetaWrite> table;
    bool table_moved = false;  // the header must be rewritten after `table`
  };
  Writes take_writes(std::size_t align);
  bool dirty() const;
  // Clusters to free once the header points at the current table on disk.
  std::vector<uint64_t> take_released();
  void mark_all_dirty();

 private:
  // set(); a cluster reaching 0 goes on the free list only when reusable.
  std::error_code set_value(uint64_t cluster, uint64_t value, bool reusable);
  std::error_code decrement(uint64_t cluster, bool reusable);
  std::error_code ensure_block(uint64_t index);
  std::error_code grow_table(uint64_t min_entries);
  uint64_t get_in(const Qcow2MetaTable& b, uint64_t i) const;
  void set_in(Qcow2MetaTable& b, uint64_t i, uint64_t v);

  uint32_t cluster_bits_;
  uint32_t order_;
  uint64_t entries_per_block_;
  uint64_t max_refcount_;
  std::unique_ptr<Qcow2MetaTable> table_;
  std::vector<std::unique_ptr<Qcow2MetaTable>> blocks_;  // by table index
  std::vector<uint64_t> free_;                            // a stack
  uint64_t cursor_ = 0;
  uint64_t allocated_ = 0;  // clusters with a non-zero refcount
  bool table_moved_ = false;
  std::vector<uint64_t> released_;
};

}  // namespace fleece::cow
