// CbwFilter: the copy-before-write filter over one live disk, and the frozen
// snapshots it keeps exact.
//
// The filter is the Device the guest writes through. It holds the live disk
// D and a chain of snapshots S1..Sn (oldest first), each with a ClusterStore
// St_i; as qcow2 files St_i is backed by St_{i+1} and St_n by D. Per
// snapshot, two bitmaps at cluster granularity:
//   needs_i(C)  the snapshot's client has not discarded C (initially all set);
//   holds_i(C)  St_i has C allocated, as data or as a zero cluster.
// A broken snapshot needs nothing any more.
//
// Reading S_i at C: broken -> fleece::Errc::snapshot_broken; !needs_i(C) ->
// fleece::Errc::access_revoked; else the first St_j, j >= i, holding C; else
// D, under a shared lock on C that the first overwrite of C waits for.
//
// A guest write (write_zeroes, trim) widened outward to clusters does, per
// cluster C, under an exclusive lock on C: walk j = n..1 until the first
// store holding C; m = the first j met with needs_j(C). Copy D[C] into St_m
// (a zero cluster without reading when D's block status says zero), mark
// St_n's C zero if it lacks C and n > m (or no m exists), set the holds bits.
// Then D is written. Once St_n holds C a write costs one bitmap test, and a
// write copies at most once whatever the number of snapshots.
//
// Failures (a store error, max-store-bytes, cbw-timeout) hit the snapshots
// that would read C from D (needy j <= m with no store holding C above j).
// If any of them has OnCbwError::break_guest_write the guest write fails
// with EIO and nothing is broken; otherwise they are all marked broken, the
// broken callback fires, and the write proceeds. A failed copy leaves the
// bits as they were, so a later writer retries.
//
// Discard on S_i (rounded inward to clusters): clear needs_i, wait for
// in-flight reads of those clusters, then free the store cluster S_i read
// from if no snapshot reads it any more (it becomes a zero cluster).
//
// Snapshots are added with the write gate closed: that instant is the
// snapshot's point in time. Only a guest write's write to D holds the gate
// (close_gate() waits for those and holds new ones); its copies run before,
// outside it, and are redone if a snapshot started meanwhile, the write then
// falling after the point in time (see cow/write_gate.hpp).
// remove_snapshot() stops the export and releases every cluster the
// snapshot read as a discard would; its store stays as a hidden zombie while
// older snapshots still read through it.
//
// Threading: any method may be called from any thread and executor; a
// std::mutex guards the bitmaps and the chain and is never held across an
// await. Cluster locks are the only locks held across I/O: one RangeLock
// over the copy units, a frozen read or block status locking its whole span
// shared as one range, a copy or a release locking its one unit exclusively
// (never waiting while holding it, so no cycle can form).
//
// Lifetime: owned by a shared_ptr; a copy that outlived its writer's
// cbw-timeout keeps running and keeps the filter alive.
#pragma once

#include "block/device.hpp"
#include "cow/cluster_store.hpp"
#include "cow/range_lock.hpp"
#include "cow/write_gate.hpp"
#include "util/result.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace fleece::cow {

enum class OnCbwError { break_snapshot, break_guest_write };

struct SnapshotPolicy {
  OnCbwError on_error = OnCbwError::break_snapshot;
  std::chrono::milliseconds cbw_timeout{0};  // 0 = wait as long as the copy takes
  uint64_t max_store_bytes = 0;              // 0 = unlimited
};

using SnapshotId = uint64_t;

struct SnapshotStats {
  uint64_t preserved_bytes = 0;  // data bytes copied into this snapshot's store
  uint64_t copies = 0;           // data clusters copied into it
  uint64_t zero_marks = 0;       // clusters recorded as zero without reading D
  uint64_t freed_clusters = 0;   // store clusters freed by discards
  uint64_t stored_bytes = 0;     // the store's data bytes now
  bool broken = false;
  std::error_code broken_reason;
  bool exported = true;  // false once stopped (a zombie kept for older snapshots)
};

struct CbwFilterOptions {
  // The backing-file link the newest store gets once the store above it goes
  // away (the live disk's file name and format).
  std::string disk_path;
  std::string disk_format = "raw";
};

class CbwFilter final : public block::Device, public std::enable_shared_from_this<CbwFilter> {
 public:
  using BrokenCallback = std::function<void(SnapshotId, std::error_code)>;

  explicit CbwFilter(std::shared_ptr<block::Device> disk, CbwFilterOptions options = {});
  ~CbwFilter() override;

  // --- Device: the guest path.
  uint64_t size() const override;
  block::Capabilities capabilities() const override;
  block::Task<std::error_code> read(uint64_t offset, std::span<std::byte> out) override;
  block::Task<std::error_code> write(uint64_t offset, std::span<const std::byte> data,
                                     block::WriteFlags flags) override;
  block::Task<std::error_code> write_zeroes(uint64_t offset, uint64_t length,
                                            block::ZeroFlags flags) override;
  block::Task<std::error_code> trim(uint64_t offset, uint64_t length,
                                    block::WriteFlags flags) override;
  block::Task<std::error_code> flush() override;  // D, then every store
  block::Task<std::error_code> cache(uint64_t offset, uint64_t length) override;
  // The live disk's: guest reads pass straight through (frozen reads never
  // use this).
  std::optional<block::FileRange> file_range(uint64_t offset, uint64_t length) const override {
    return disk_->file_range(offset, length);
  }
  block::Task<std::error_code> block_status(uint64_t offset, uint64_t length,
                                            std::vector<block::Extent>& out) override;

  // --- The write gate (see cow/write_gate.hpp).
  block::Task<void> close_gate() { return gate_.close(); }
  void open_gate() { gate_.open(); }
  const WriteGate& gate() const { return gate_; }

  // --- Snapshot lifecycle.
  // Appends a new newest snapshot. The gate must be closed (asserted). The
  // store must be empty (check with empty_store() before closing the gate:
  // here only its stored bytes are), of the disk's size, and of the cluster
  // size every other store of this disk has (else
  // std::errc::invalid_argument); the caller created it backed by the disk.
  // Re-points the previous newest store's backing file at it.
  block::Task<Result<SnapshotId>> add_snapshot(std::shared_ptr<ClusterStore> store,
                                               SnapshotPolicy policy = {});
  // The same in two steps: prepare() makes the snapshot's bitmaps (O(disk
  // size / cluster size): 64 MiB of them for 1 TiB in 4 KiB clusters)
  // before the gate closes, so that the add itself holds the guest for
  // O(1) work.
  struct Snapshot;
  class Prepared {
    friend class CbwFilter;
    std::shared_ptr<Snapshot> snapshot;
  };
  static Prepared prepare(std::shared_ptr<ClusterStore> store, SnapshotPolicy policy = {});
  // A reference, moved from at once: GCC 12 may lose a by-value class
  // parameter of a coroutine.
  block::Task<Result<SnapshotId>> add_snapshot(Prepared&& prepared);
  static bool empty_store(const ClusterStore& store);  // every cluster absent
  // Stops the snapshot: its reads fail from now on (std::errc::no_such_device),
  // and its store is removed once no older snapshot reads through it.
  block::Task<std::error_code> remove_snapshot(SnapshotId id);

  // --- The frozen path (what FrozenView serves).
  block::Task<std::error_code> read_frozen(SnapshotId id, uint64_t offset,
                                           std::span<std::byte> out);
  block::Task<std::error_code> discard_frozen(SnapshotId id, uint64_t offset, uint64_t length);
  // Extents cover [offset, offset + n), n > 0: all of the range up to 65536
  // clusters, so callers continue from where they stop. Discarded clusters are
  // reported as HOLE|ZERO with depth 0 (reading them fails, so skip them);
  // clusters held by a store as data (depth = stores crossed) or ZERO;
  // the rest as D reports them, depth below the whole chain.
  block::Task<std::error_code> block_status_frozen(SnapshotId id, uint64_t offset,
                                                   uint64_t length,
                                                   std::vector<block::Extent>& out);

  // --- Observation.
  std::optional<SnapshotStats> stats(SnapshotId id) const;
  std::vector<SnapshotId> snapshots() const;  // exported ones, oldest first
  size_t store_count() const;                 // stores in the chain, zombies included
  uint32_t cluster_size() const;              // 0 while the chain is empty
  std::shared_ptr<ClusterStore> store(SnapshotId id) const;
  void set_broken_callback(BrokenCallback cb);
  const block::Device& disk() const { return *disk_; }

 private:
  struct CopyPlan;
  class CopyOutcome;
  struct BackgroundCopy;
  struct RangeCopy;

  block::Task<std::error_code> copy_then_enter(uint64_t offset, uint64_t length,
                                               WriteGate::Ticket& ticket);
  bool needs_copies(uint64_t offset, uint64_t length) const;
  block::Task<std::error_code> before_write(uint64_t offset, uint64_t length);
  block::Task<std::error_code> preserve_range(uint64_t first, uint64_t last);
  // One of preserve_range()'s workers (the range keeps the filter alive).
  block::Task<void> copy_worker(std::shared_ptr<RangeCopy>* hand_over);
  // A writer's copies, spawned so it can stop waiting at cbw-timeout.
  block::Task<void> copy_in_background(BackgroundCopy* hand_over, uint64_t first, uint64_t last);
  block::Task<std::error_code> preserve_cluster(uint64_t cluster);
  block::Task<std::error_code> copy_cluster(const std::shared_ptr<Snapshot>& snap,
                                            uint64_t cluster);
  std::error_code give_up_on_copies(uint64_t first, uint64_t last, std::error_code why);
  // Steps (2) and (3) of a discard for clusters [first, end) the snapshot
  // no longer needs, then removal of stores nobody reads through.
  block::Task<void> release_clusters(std::shared_ptr<Snapshot> snap, uint64_t first,
                                     uint64_t end);
  block::Task<void> release_cluster(const std::shared_ptr<Snapshot>& snap, uint64_t c);
  block::Task<void> reap_zombies();

  // Helpers below run with mutex_ held; indexes are positions in chain_.
  std::optional<size_t> index_of(const Snapshot* s) const;
  std::shared_ptr<Snapshot> find_exported(SnapshotId id) const;
  std::optional<size_t> first_holder(size_t from, uint64_t cluster) const;
  bool store_has_readers(size_t k, uint64_t cluster) const;
  std::vector<size_t> readers_from_disk(uint64_t cluster) const;
  bool needy(size_t j, uint64_t cluster) const;
  bool all_newest_hold(uint64_t first, uint64_t last) const;
  std::chrono::milliseconds write_timeout() const;
  void break_snapshots(const std::vector<size_t>& which, std::error_code why,
                       std::vector<std::pair<SnapshotId, std::error_code>>& fired);
  void fire_broken(const std::vector<std::pair<SnapshotId, std::error_code>>& fired);

  std::shared_ptr<block::Device> disk_;
  const CbwFilterOptions options_;
  const uint64_t size_;
  WriteGate gate_;
  RangeLock locks_;  // over copy units
  RangeLock admin_;  // [0, 0] exclusive: serializes add/remove/reap of stores

  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<Snapshot>> chain_;  // oldest first, zombies included
  uint32_t cluster_size_ = 0;
  uint64_t clusters_ = 0;
  SnapshotId next_id_ = 1;
  BrokenCallback on_broken_;
};

}  // namespace fleece::cow
