#include "cow/qcow2_bitmaps.hpp"

#include "cow/qcow2_format.hpp"
#include "util/errors.hpp"
#include "util/log.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_set>

namespace fleece::cow {

using namespace qcow2;
using block::Task;

namespace {

std::error_code fail(std::string* why, std::error_code ec, std::string msg) {
  if (why) *why = std::move(msg);
  return ec;
}

uint64_t table_clusters(uint64_t entries, uint64_t cs) {
  return std::max<uint64_t>(1, div_up(entries * 8, cs));
}

}  // namespace

Task<Result<std::unique_ptr<Qcow2BitmapStore>>> Qcow2BitmapStore::open(
    std::shared_ptr<Qcow2Image> image, std::string* why) {
  std::unique_ptr<Qcow2BitmapStore> st(new Qcow2BitmapStore(std::move(image)));
  std::string reason;
  if (auto ec = co_await st->load(&reason)) {
    FLEECE_LOG_ERROR("qcow2", "qcow2 bitmaps: {}", reason);
    if (st->image_->writable()) {
      // Nobody may trust these bitmaps once fleece writes the disk.
      if (auto iec = co_await st->image_->invalidate_bitmaps())
        reason += fmt::format(" (and clearing the bitmaps autoclear bit failed: {})",
                              iec.message());
      else
        reason += "; the image's bitmaps are now marked inconsistent";
    }
    co_return fail(why, ec, std::move(reason));
  }
  co_return st;
}

Task<std::error_code> Qcow2BitmapStore::load(std::string* why) {
  const Qcow2Header h = image_->header();
  if (!h.has_bitmaps_extension) co_return std::error_code{};
  const auto corrupt = make_error_code(Errc::corrupt_image);
  if (!h.bitmaps_extension_error.empty()) co_return fail(why, corrupt, h.bitmaps_extension_error);
  const uint64_t cs = h.cluster_size();
  const uint64_t fsize = image_->file_size();
  const bool consistent = (h.autoclear_features & kAutoclearBitmaps) != 0;
  const Qcow2BitmapsExtension ext = h.bitmaps;
  if (!consistent)
    FLEECE_LOG_WARN("qcow2",
                    "qcow2 bitmaps were left stale by a program lacking bitmap support "
                    "(autoclear bit 0 clear): all are inconsistent");

  // Every cluster bitmap metadata points at, checked once.
  std::unordered_set<uint64_t> claimed;
  auto claim = [&](uint64_t off, uint64_t n, const std::string& what) -> std::error_code {
    if (off == 0 || off % cs != 0 || off >= fsize || n > (fsize - off + cs - 1) / cs)
      return fail(why, corrupt,
                  fmt::format("{} at {} ({} clusters) is misaligned or outside the file", what,
                              off, n));
    if (image_->overlaps_core_metadata(off, n * cs))
      return fail(why, corrupt,
                  fmt::format("{} at {} overlaps the image's own metadata", what, off));
    for (uint64_t k = 0; k < n; ++k) {
      if (!claimed.insert(off + k * cs).second)
        return fail(why, corrupt,
                    fmt::format("{} at {} is referenced twice", what, off + k * cs));
      if (consistent && image_->refcount(off + k * cs) == 0)
        return fail(why, corrupt, fmt::format("{} at {} has refcount 0", what, off + k * cs));
    }
    return {};
  };

  if (ext.directory_size == 0 || ext.directory_size > kMaxBitmapDirectoryBytes)
    co_return fail(why, corrupt,
                   fmt::format("qcow2 bitmap directory size {} is invalid (1..{})",
                               ext.directory_size, kMaxBitmapDirectoryBytes));
  const uint64_t dir_clusters = div_up(ext.directory_size, cs);
  if (auto ec = claim(ext.directory_offset, dir_clusters, "qcow2 bitmap directory")) co_return ec;
  Qcow2Bytes dir(dir_clusters * cs);
  if (auto ec = co_await image_->read_meta(ext.directory_offset, dir.span()))
    co_return fail(why, ec, fmt::format("reading the qcow2 bitmap directory: {}", ec.message()));
  auto entries = parse_qcow2_bitmap_directory(dir.span().first(ext.directory_size),
                                              ext.nb_bitmaps, h.size, h.cluster_bits, why);
  if (!entries) co_return entries.error();
  dir_offset_ = ext.directory_offset;
  dir_clusters_ = dir_clusters;
  dir_owned_ = consistent;

  for (auto& e : *entries) {
    const std::string label = fmt::format("qcow2 bitmap '{}'", e.name);
    auto made = DirtyBitmap::create(e.name, h.size, e.granularity());
    if (!made)
      co_return fail(why, made.error(),
                     fmt::format("{}: {} (granularity {})", label, made.error().message(),
                                 e.granularity()));
    auto b = *made;
    b->set_persistent(true);
    b->set_enabled((e.flags & kBitmapAuto) != 0);
    OnDisk d;
    d.entry = e;
    d.owned = consistent;
    if (!consistent || (e.flags & kBitmapInUse)) {
      b->set_inconsistent();
      FLEECE_LOG_WARN("qcow2", "{} is inconsistent (in use at a crash, or stale): a full "
                      "backup is needed", label);
    }
    if (consistent) {
      // The table, then every data cluster (qcow2.txt "Bitmap table").
      const uint64_t tclusters = table_clusters(e.table_size, cs);
      if (auto ec = claim(e.table_offset, tclusters, label + " table")) co_return ec;
      Qcow2Bytes table(tclusters * cs);
      if (auto ec = co_await image_->read_meta(e.table_offset, table.span()))
        co_return fail(why, ec, fmt::format("reading the {} table: {}", label, ec.message()));
      Qcow2Bytes cluster(cs);
      d.table.resize(e.table_size);
      for (uint64_t i = 0; i < e.table_size; ++i) {
        const uint64_t raw = load_be64(table.data() + i * 8);
        d.table[i] = raw;
        const uint64_t off = raw & kEntryOffsetMask;
        if ((raw & kBitmapTableReserved) != 0 || (off != 0 && (raw & kBitmapTableAllOnes)))
          co_return fail(why, corrupt,
                         fmt::format("{} table entry {} (0x{:x}) has reserved bits set", label,
                                     i, raw));
        if (off == 0) {
          if ((raw & kBitmapTableAllOnes) && !b->inconsistent()) b->deserialize_ones(i * cs, cs);
          continue;
        }
        if (auto ec = claim(off, 1, fmt::format("{} data cluster {}", label, i))) co_return ec;
        if (b->inconsistent()) continue;  // its clusters are only kept to be freed
        if (auto ec = co_await image_->read_meta(off, cluster.span()))
          co_return fail(why, ec, fmt::format("reading {} data: {}", label, ec.message()));
        b->deserialize_or(i * cs, cluster.span());
      }
    }
    loaded_.push_back(b);
    disk_.push_back(std::move(d));
  }

  if (!image_->writable()) co_return std::error_code{};
  // Opened for writing: every bitmap is in_use on disk before the disk is
  // written (QEMU does the same), so a crash leaves them inconsistent.
  // Stale ones (not owned) get fresh, empty tables instead of their old
  // references.
  std::vector<OnDisk> next;
  for (std::size_t i = 0; i < disk_.size(); ++i) {
    if (disk_[i].owned) {
      next.push_back(disk_[i]);
      next.back().entry.flags |= kBitmapInUse;
      continue;
    }
    auto w = co_await write_bitmap(*loaded_[i]);
    if (!w) co_return fail(why, w.error(), fmt::format("rewriting stale qcow2 bitmap '{}': {}",
                                                       loaded_[i]->name(),
                                                       w.error().message()));
    next.push_back(std::move(*w));
  }
  if (auto ec = co_await commit(std::move(next)))
    co_return fail(why, ec, fmt::format("marking qcow2 bitmaps in use: {}", ec.message()));
  co_return std::error_code{};
}

std::vector<uint64_t> Qcow2BitmapStore::clusters_of(const OnDisk& d) const {
  const uint64_t cs = image_->cluster_size();
  std::vector<uint64_t> out;
  if (!d.owned) return out;
  for (uint64_t k = 0; k < table_clusters(d.entry.table_size, cs); ++k)
    out.push_back(d.entry.table_offset + k * cs);
  for (uint64_t raw : d.table)
    if (raw & kEntryOffsetMask) out.push_back(raw & kEntryOffsetMask);
  return out;
}

Task<Result<Qcow2BitmapStore::OnDisk>> Qcow2BitmapStore::write_bitmap(const DirtyBitmap& b) {
  const Qcow2Header h = image_->header();
  const uint64_t cs = h.cluster_size();
  if (b.size() != h.size || b.granularity_bits() < kMinBitmapGranularityBits ||
      b.granularity_bits() > kMaxBitmapGranularityBits || b.name().empty() ||
      b.name().size() > 1023)
    co_return make_error_code(std::errc::invalid_argument);
  OnDisk d;
  d.entry.name = b.name();
  d.entry.granularity_bits = b.granularity_bits();
  const uint64_t n = qcow2_bitmap_table_entries(h.size, b.granularity_bits(), h.cluster_bits);
  d.entry.table_size = uint32_t(n);
  const bool inconsistent = b.inconsistent();
  d.entry.flags = (b.enabled() ? kBitmapAuto : 0) | (inconsistent ? kBitmapInUse : 0);
  const uint64_t tclusters = table_clusters(n, cs);
  auto tab = image_->allocate_meta_clusters(tclusters);
  if (!tab) co_return tab.error();
  d.entry.table_offset = *tab;
  d.table.assign(n, 0);
  std::error_code ec;
  Qcow2Bytes cluster(cs);
  for (uint64_t i = 0; i < n && !ec && !inconsistent; ++i) {
    if (b.serialized_range_zero(i * cs, cs)) continue;  // an unallocated, all-zero entry
    auto off = image_->allocate_meta_clusters(1);
    if (!off) {
      ec = off.error();
      break;
    }
    d.table[i] = *off;
    b.serialize(i * cs, cluster.span());
    ec = co_await image_->write_meta(*off, cluster.span());
  }
  if (!ec) {
    Qcow2Bytes table(tclusters * cs);
    for (uint64_t i = 0; i < n; ++i) store_be64(table.data() + i * 8, d.table[i]);
    ec = co_await image_->write_meta(d.entry.table_offset, table.span());
  }
  if (ec) {
    auto mine = clusters_of(d);
    image_->free_after_flush(mine);
    co_return ec;
  }
  co_return d;
}

Task<std::error_code> Qcow2BitmapStore::commit(std::vector<OnDisk> next) {
  const uint64_t cs = image_->cluster_size();
  std::vector<Qcow2BitmapEntry> entries;
  for (auto& d : next) entries.push_back(d.entry);
  const auto dir = encode_qcow2_bitmap_directory(entries);
  std::optional<Qcow2BitmapsExtension> ext;
  uint64_t new_dir = 0, new_clusters = 0;
  if (!next.empty()) {
    new_clusters = div_up(dir.size(), cs);
    auto off = image_->allocate_meta_clusters(new_clusters);
    if (!off) co_return off.error();
    new_dir = *off;
    Qcow2Bytes bytes(new_clusters * cs);
    std::copy(dir.begin(), dir.end(), bytes.data());
    std::error_code ec = co_await image_->write_meta(new_dir, bytes.span());
    if (ec) {
      std::vector<uint64_t> mine;
      for (uint64_t k = 0; k < new_clusters; ++k) mine.push_back(new_dir + k * cs);
      image_->free_after_flush(mine);
      co_return ec;
    }
    ext = Qcow2BitmapsExtension{uint32_t(next.size()), dir.size(), new_dir};
  }
  // Tables, data and directory (and their refcounts) are durable before the
  // header points at them.
  if (auto ec = co_await image_->flush()) co_return ec;
  if (auto ec = co_await image_->set_bitmaps_extension(ext)) co_return ec;

  // Free what only the old set referenced.
  std::unordered_set<uint64_t> keep;
  for (auto& d : next)
    for (uint64_t c : clusters_of(d)) keep.insert(c);
  std::vector<uint64_t> frees;
  for (auto& d : disk_)
    for (uint64_t c : clusters_of(d))
      if (!keep.count(c)) frees.push_back(c);
  if (dir_offset_ != 0 && dir_owned_)
    for (uint64_t k = 0; k < dir_clusters_; ++k) frees.push_back(dir_offset_ + k * cs);
  disk_ = std::move(next);
  dir_offset_ = new_dir;
  dir_clusters_ = new_clusters;
  dir_owned_ = true;
  image_->free_after_flush(frees);
  co_return co_await image_->flush();
}

Task<std::error_code> Qcow2BitmapStore::store(
    const std::vector<std::shared_ptr<DirtyBitmap>>& bitmaps) {
  if (!image_->writable()) co_return make_error_code(std::errc::read_only_file_system);
  std::vector<std::shared_ptr<DirtyBitmap>> keep;
  for (const auto& b : bitmaps)
    if (b && b->persistent()) keep.push_back(b);
  if (keep.size() > kMaxBitmaps) co_return make_error_code(std::errc::too_many_files_open);
  std::vector<OnDisk> next;
  std::error_code ec;
  for (const auto& b : keep) {
    auto w = co_await write_bitmap(*b);
    if (!w) {
      ec = w.error();
      FLEECE_LOG_ERROR("qcow2", "storing qcow2 bitmap '{}': {}", b->name(), ec.message());
      break;
    }
    next.push_back(std::move(*w));
  }
  if (ec) {
    for (auto& d : next) {
      auto mine = clusters_of(d);
      image_->free_after_flush(mine);
    }
    co_return ec;
  }
  co_return co_await commit(std::move(next));
}

Task<std::error_code> Qcow2BitmapStore::remove(const std::string& name) {
  if (!image_->writable()) co_return make_error_code(std::errc::read_only_file_system);
  std::vector<OnDisk> next;
  bool found = false;
  for (auto& d : disk_) {
    if (d.entry.name == name)
      found = true;
    else
      next.push_back(d);
  }
  if (!found) co_return make_error_code(std::errc::no_such_file_or_directory);
  co_return co_await commit(std::move(next));
}

}  // namespace fleece::cow
