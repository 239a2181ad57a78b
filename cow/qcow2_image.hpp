// Qcow2Image: a qcow2 (v2 or v3) image as a block::Device, over a file that
// is itself a block::Device (a raw file, or memory in tests).
//
// Made first for fleecing stores (a throwaway qcow2 backed by the live disk)
// and usable for ordinary qcow2 disks.
//
//   auto img = co_await Qcow2Image::create(file, {.virtual_size = n,
//                                                 .backing_file = "disk.raw",
//                                                 .backing_format = "raw"});
//   img.value()->set_backing(live_disk);   // what unallocated clusters read
//
// Cluster API (for the copy-before-write filter; guest cluster g covers
// bytes [g * cluster_size(), (g + 1) * cluster_size())):
//   map_cluster(g)      unallocated (reads fall through to the backing) /
//                       zero / data at a host offset. depth 1 = this image.
//   write_cluster(g, d) stores a whole cluster: a fresh data cluster is
//                       allocated and written, then the L2 entry points at
//                       it (an existing private data cluster is overwritten
//                       in place).
//   zero_cluster(g)     makes g a zero cluster; any data cluster it had is
//                       freed at the next flush().
//   discard_cluster(g)  the same, then flushes, so the data cluster is free
//                       (refcount 0, reused by the next allocation) on return.
//   data_bytes_in_use() bytes of host clusters referenced by L2 entries.
// Guest-cluster operations on the same cluster are serialised by an internal
// range lock; reads hold it shared, so a cluster is never freed or reused
// under a read.
//
// Device semantics: read() returns data clusters from the file, zeroes for
// zero clusters, and the backing Device (or zeroes without one, or past its
// end) for unallocated ones. write() of part of a cluster reads the rest
// (copy-on-write through the backing). write_zeroes() and trim() turn whole
// clusters into zero clusters (never unallocated: a discarded cluster must
// not fall through to newer backing data) and write zeroes into partial
// ones; trim() ignores partial clusters. flush() writes back metadata and
// flushes the file; WriteFlags::fua flushes before completing.
//
// file_range() (sendfile): when the whole range is, in this image, data
// clusters that follow each other in the file, that range of the file (if
// its pages are resident); when the range is wholly unallocated here, the
// backing device's file_range(); otherwise none (zero or compressed
// clusters, a mix, a gap in the file, an L2 table not cached yet). Like
// read(), it takes the guest clusters' range lock shared, but without
// waiting (none while a write holds or waits for them), and it pins the
// host clusters until the range's keep is dropped: a cluster zeroed in the
// meantime is freed only after that. A host cluster it has handed out is
// never reused for other data while the image is open: once freed, its
// bytes are punched out and it is retired (refcount 0, off the free list),
// because a socket may keep its page-cache pages for as long as the peer
// does not read them (sendfile is zero copy), and a reused cluster would
// put another offset's data there. A later write in place may still change
// the bytes (the Device contract).
//
// L2 cache: L2 tables of an opened image are cached up to
// Qcow2OpenOptions::l2_cache_bytes, least recently used clean
// tables dropped first (cow/qcow2_l2_cache.hpp). Dirty tables stay until
// written back: loading a table while dirty ones keep the cache over its
// limit writes the metadata back (as flush() does) so that they can go.
// Images made by create() (fleecing stores) keep every table, so that
// cached_mapping() answers for all their clusters without I/O.
//
// Crash safety (lazy_refcounts off, refcounts exact on disk after flush):
// metadata is cached and written back by flush() in dependency order with a
// file flush between stages: refcount blocks; refcount table; header; L2
// tables; L1 table. So a data cluster is written before the L2 entry that
// points at it reaches the file, a refcount is on disk before any
// reference, and a freed cluster's refcount is decremented (and the cluster
// reused) only after the L2 change that dropped it is on disk. A crash can
// leak clusters, never corrupt.
//
// Extended L2 entries (create() only, for stores): read(), block_status(),
// flush() and the subcluster API below work per subcluster; the cluster API,
// write(), write_zeroes(), trim() and file_range() are for standard images
// (they fail with fleece::Errc::unsupported_feature, or give no range).
//
// Not supported (refused with fleece::Errc::unsupported_feature and a
// message): encryption, external data files, opening images with extended
// L2 entries, zstd; writes to images with internal snapshots, dirty
// (lazy-refcount) images, or compressed clusters; reads of compressed
// clusters.
#pragma once

#include "block/device.hpp"
#include "cow/qcow2_header.hpp"
#include "cow/qcow2_l2_cache.hpp"
#include "cow/qcow2_meta_table.hpp"
#include "cow/qcow2_refcounts.hpp"
#include "cow/range_lock.hpp"
#include "util/result.hpp"

#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace fleece::cow {

struct Qcow2CreateOptions {
  uint64_t virtual_size = 0;
  uint32_t cluster_size = 64 * 1024;  // power of two, 512 B .. 2 MiB
  std::string backing_file;           // empty: no backing file
  std::string backing_format;         // "raw", "qcow2"; empty: not recorded
  // Extended L2 entries: each cluster is 32 subclusters allocated one by
  // one, so a store keeps 4 KiB copies in 64 KiB clusters. Needs a cluster
  // size of at least 16 KiB (QEMU's minimum for them).
  bool extended_l2 = false;
};

struct Qcow2OpenOptions {
  bool read_only = false;
  // Keep the bitmaps extension valid (autoclear bit 0) on a writable open.
  // Without it, opening for writing clears every autoclear bit, as the spec
  // asks of a program that does not keep bitmaps up to date. With it, the
  // caller MUST open a Qcow2BitmapStore (cow/qcow2_bitmaps.hpp) on the image
  // before anything writes to it: that marks every stored bitmap in_use.
  bool keep_bitmaps = false;
  // Bytes of L2 tables kept in memory (QEMU's l2-cache-size); 0: enough to
  // map 32 GiB of virtual disk (QEMU's default cover), or the whole disk if
  // smaller, and at most 32 MiB. At least one table is always kept.
  uint64_t l2_cache_bytes = 0;
};

enum class Qcow2ClusterKind { unallocated, zero, data };

struct Qcow2ClusterMapping {
  Qcow2ClusterKind kind = Qcow2ClusterKind::unallocated;
  uint64_t host_offset = 0;  // data clusters only
};

class Qcow2Image final : public block::Device,
                         public std::enable_shared_from_this<Qcow2Image> {
 public:
  // Formats `file` (everything in it is overwritten) and opens the result.
  static block::Task<Result<std::shared_ptr<Qcow2Image>>> create(
      std::shared_ptr<block::Device> file, Qcow2CreateOptions options);
  // Opens an existing image. On failure *why (if given) says what is wrong.
  static block::Task<Result<std::shared_ptr<Qcow2Image>>> open(
      std::shared_ptr<block::Device> file, Qcow2OpenOptions options = {},
      std::string* why = nullptr);

  ~Qcow2Image() override;

  // The Device unallocated clusters read from (nullptr: zeroes). May be
  // changed at any time; reads in flight keep the one they started with.
  void set_backing(std::shared_ptr<block::Device> backing);
  std::shared_ptr<block::Device> backing() const;

  std::string backing_file() const;
  std::string backing_format() const;
  // Rewrites the backing file link in the header and makes it durable (the
  // header alone, by FUA, when nothing else in it is pending; else a full
  // flush()). What unallocated clusters read is set_backing()'s business.
  block::Task<std::error_code> set_backing_file(std::string file, std::string format);
  uint32_t cluster_size() const { return uint32_t(header_.cluster_size()); }
  uint32_t version() const { return header_.version; }
  bool dirty() const { return header_.dirty(); }
  uint64_t guest_clusters() const { return header_.guest_clusters(); }

  // --- cluster API -------------------------------------------------------
  block::Task<Result<Qcow2ClusterMapping>> map_cluster(uint64_t guest_cluster);
  // The same without I/O, from the L2 cache: std::nullopt when the L2 table
  // is not cached (never for images made by create(): every table they have
  // was made in memory, and their cache has no limit) or the entry is
  // invalid.
  std::optional<Qcow2ClusterMapping> cached_mapping(uint64_t guest_cluster) const;
  // data.size() == cluster_size(), or for the last cluster of a virtual
  // size that ends inside it, either that or exactly the bytes up to the end
  // (the rest is stored as zeroes).
  block::Task<std::error_code> write_cluster(uint64_t guest_cluster,
                                             std::span<const std::byte> data,
                                             block::WriteFlags flags = {});
  block::Task<std::error_code> zero_cluster(uint64_t guest_cluster);
  block::Task<std::error_code> discard_cluster(uint64_t guest_cluster);
  // Bytes of data clusters referenced by L2 entries; with extended L2, of
  // allocated subclusters.
  uint64_t data_bytes_in_use() const;

  // --- subcluster API ----------------------------------------------------
  // A range here is whole subclusters of one cluster (the last may end at
  // the virtual size); without extended L2 a subcluster is the cluster, and
  // these are the cluster API's write/zero/discard. Same locking as those.
  bool extended_l2() const { return header_.extended_l2(); }
  uint32_t subcluster_size() const { return uint32_t(header_.subcluster_size()); }
  // The kind of the subcluster holding guest byte `offset`, from the L2
  // cache without I/O (std::nullopt as cached_mapping()).
  std::optional<Qcow2ClusterKind> cached_subcluster_kind(uint64_t offset) const;
  // Stores data at [offset, offset + data.size()): a fresh host cluster is
  // attached to the L2 entry if it has none, written, then the subclusters
  // are marked allocated (data before metadata, as write_cluster()).
  block::Task<std::error_code> write_subclusters(uint64_t offset,
                                                 std::span<const std::byte> data);
  // Makes the range read as zeroes (never unallocated); the host cluster is
  // freed at the next flush() once none of its subclusters is allocated.
  block::Task<std::error_code> zero_subclusters(uint64_t offset, uint64_t length);
  // The same, then flushes, so a host cluster left empty is free on return;
  // in a host cluster still in use, the range's bytes are trimmed (a hole
  // in the file).
  block::Task<std::error_code> discard_subclusters(uint64_t offset, uint64_t length);
  // Whether the L1 table points at no L2 table: every cluster unallocated.
  bool no_l2_tables() const;
  // L2 tables in memory now, and the limit they are kept to.
  uint64_t l2_cache_bytes() const;
  uint64_t l2_cache_limit() const;
  // Host clusters with a non-zero refcount, times the cluster size.
  uint64_t file_bytes_in_use() const;

  // --- metadata kept by other layers (qcow2 bitmaps) -----------------------
  // Host clusters for metadata that this class does not interpret. The
  // caller writes them with write_meta(), makes them durable with flush()
  // before any on-disk reference to them, and hands them back with
  // free_after_flush() once no on-disk reference is left.
  bool writable() const { return writable_; }
  Qcow2Header header() const;  // a copy
  uint64_t file_size() const;
  // n contiguous clusters with refcount 1 (std::errc::read_only_file_system
  // on a read-only image).
  Result<uint64_t> allocate_meta_clusters(uint64_t n);
  // Their refcounts drop after the next metadata flush has completed.
  void free_after_flush(std::span<const uint64_t> host_clusters);
  uint64_t refcount(uint64_t host_offset) const;
  // Whether [host, host + len) overlaps the header, the L1 table, the
  // refcount table or blocks, or an L2 table: metadata another structure
  // must never point into.
  bool overlaps_core_metadata(uint64_t host, uint64_t len) const;
  // Whole clusters, cluster-aligned offsets and buffers (Qcow2Bytes).
  // read_meta() fails with fleece::Errc::corrupt_image at or past the end
  // of the file and reads zeroes past it.
  block::Task<std::error_code> read_meta(uint64_t host, std::span<std::byte> out);
  block::Task<std::error_code> write_meta(uint64_t host, std::span<const std::byte> data);
  // Sets or removes the bitmaps header extension (and autoclear bit 0 with
  // it), then writes back all metadata and flushes.
  block::Task<std::error_code> set_bitmaps_extension(
      const std::optional<Qcow2BitmapsExtension>& ext);
  // Clears autoclear bit 0 and keeps the extension: every stored bitmap is
  // then inconsistent for every reader (the spec's rule), QEMU included.
  block::Task<std::error_code> invalidate_bitmaps();

  // --- block::Device ------------------------------------------------------
  uint64_t size() const override { return header_.size; }
  block::Capabilities capabilities() const override;
  block::Task<std::error_code> read(uint64_t offset, std::span<std::byte> out) override;
  block::Task<std::error_code> write(uint64_t offset, std::span<const std::byte> data,
                                     block::WriteFlags flags) override;
  block::Task<std::error_code> write_zeroes(uint64_t offset, uint64_t length,
                                            block::ZeroFlags flags) override;
  block::Task<std::error_code> trim(uint64_t offset, uint64_t length,
                                    block::WriteFlags flags) override;
  block::Task<std::error_code> flush() override;
  block::Task<std::error_code> block_status(uint64_t offset, uint64_t length,
                                            std::vector<block::Extent>& out) override;
  std::optional<block::FileRange> file_range(uint64_t offset, uint64_t length) const override;

 private:
  struct Entry;  // a decoded L2 entry
  struct HostPin;  // host bytes a file range is sending (qcow2_file_range.cpp)
  using HostPins = std::list<std::pair<uint64_t, uint64_t>>;  // [first, end) host bytes
  Qcow2Image(std::shared_ptr<block::Device> file, Qcow2Header header);

  block::Task<std::error_code> load_metadata(std::string* why);
  // The L2 table for l1_index (loaded into the cache if the L1 entry points
  // at one; null if not). Holding the pointer pins it in the cache; its
  // bytes are read and changed under mu_ only.
  block::Task<Result<Qcow2L2Cache::Table>> l2_table(uint64_t l1_index);
  // guest_cluster's entry; *keep (if given) receives its table (null when
  // the L1 entry is empty), pinned for a later change of the entry.
  block::Task<Result<Entry>> lookup(uint64_t guest_cluster, Qcow2L2Cache::Table* keep = nullptr);
  // Under mu_: entry i of an L2 table, decoded and checked; and its update
  // (bitmap: the second word with extended L2, ignored without).
  Result<Entry> decode_locked(const Qcow2MetaTable& l2, uint64_t i) const;
  void set_l2_locked(Qcow2MetaTable& l2, uint64_t i, uint64_t word, uint64_t bitmap = 0);
  std::error_code standard_only() const;  // unsupported_feature with extended L2
  // Checks a subcluster range; gives its cluster and subcluster mask.
  std::error_code subcluster_range(uint64_t offset, uint64_t length, uint64_t* g,
                                   uint32_t* mask) const;
  // Under mu_: g's entry from the L2 cache, without I/O; std::nullopt when
  // its table is not cached.
  std::optional<Result<Entry>> cached_entry_locked(uint64_t guest_cluster) const;
  // Under mu_: whether a file range being sent covers the host cluster.
  bool pinned_locked(uint64_t host) const;
  // Drops a pin and frees the clusters it alone was holding back.
  void unpin(HostPins::iterator pin);
  // Under mu_: the refcount of a host cluster no reference is left to drops
  // (one file_range() handed out is retired and queued in to_punch_).
  void release_locked(uint64_t host);
  // The L2 table for l1_index, allocating a new one if needed.
  block::Task<Result<Qcow2L2Cache::Table>> l2_for_update(uint64_t l1_index);
  // After a request (or loading a table): trims the L2 cache to its limit,
  // writing metadata back first if dirty tables keep it over.
  block::Task<void> settle_l2();
  bool l2_over_limit() const;
  std::error_code writable_check() const;
  bool has_backing_locked() const;

  block::Task<std::error_code> write_cluster_locked(uint64_t g, std::span<const std::byte> data);
  block::Task<std::error_code> zero_cluster_locked(uint64_t g);
  block::Task<std::error_code> write_subclusters_locked(uint64_t g, uint32_t mask,
                                                        std::span<const std::byte> data);
  block::Task<std::error_code> zero_subclusters_locked(uint64_t g, uint32_t mask);
  block::Task<std::error_code> write_partial_locked(uint64_t g, uint64_t in_cluster,
                                                    std::span<const std::byte> data);
  block::Task<std::error_code> read_backing(std::shared_ptr<block::Device> backing,
                                            uint64_t offset, std::span<std::byte> out);
  block::Task<std::error_code> read_host(uint64_t host, std::span<std::byte> out);
  block::Task<std::error_code> flush_metadata();
  void mark_all_dirty_locked();

  std::shared_ptr<block::Device> file_;
  // Immutable after open except the refcount table location, the feature
  // bits and the backing file, which change under mu_.
  Qcow2Header header_;
  std::size_t io_align_ = 1;
  bool writable_ = true;
  std::string read_only_reason_;

  mutable std::mutex mu_;  // guards everything below; never held across co_await
  std::shared_ptr<block::Device> backing_;
  Qcow2Bytes header_cluster_;
  bool header_dirty_ = false;
  std::unique_ptr<Qcow2MetaTable> l1_;
  mutable Qcow2L2Cache l2_;  // mutable: lookups mark tables recently used
  std::optional<Qcow2Refcounts> refcounts_;
  std::vector<uint64_t> free_after_flush_;  // host clusters dropped from L2
  mutable HostPins pins_;                   // host bytes being sent by file ranges
  std::vector<uint64_t> pinned_frees_;      // free on disk, released when unpinned
  mutable std::vector<bool> sent_;          // host clusters file_range() handed out
  std::vector<uint64_t> to_punch_;          // retired clusters whose bytes go back
  uint64_t data_clusters_ = 0;
  uint64_t data_subclusters_ = 0;  // extended L2: allocated subclusters
  uint64_t file_size_ = 0;  // the file's size at open, for bounds checks

  mutable RangeLock clusters_;  // guest clusters (file_range() too)
  RangeLock flush_mutex_;  // one metadata write-back at a time
};

}  // namespace fleece::cow
