#include "cow/qcow2_image.hpp"

#include "cow/qcow2_entry.hpp"
#include "cow/qcow2_format.hpp"
#include "util/errors.hpp"
#include "util/log.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <unordered_set>

namespace fleece::cow {

using namespace qcow2;
using block::Task;


namespace {

std::error_code fail(std::string* why, std::error_code ec, std::string msg) {
  FLEECE_LOG_ERROR("qcow2", "{}", msg);
  if (why) *why = std::move(msg);
  return ec;
}

// QEMU's default L2 cache: full cover of the disk up to 32 GiB, at most
// 32 MiB (which caps it for clusters under 64 KiB).
uint64_t l2_cache_limit_for(const Qcow2Header& h, uint64_t requested) {
  if (requested != 0) return requested;
  constexpr uint64_t kCover = uint64_t{32} << 30, kMax = uint64_t{32} << 20;
  const uint64_t cs = h.cluster_size();
  const uint64_t entries = div_up(std::clamp<uint64_t>(h.size, 1, kCover), cs);
  return std::min(kMax, align_up(entries * 8, cs));
}

}  // namespace

Qcow2Image::Qcow2Image(std::shared_ptr<block::Device> file, Qcow2Header header)
    : file_(std::move(file)), header_(std::move(header)) {
  io_align_ = std::max<uint32_t>(1, file_->capabilities().min_block);
}

Qcow2Image::~Qcow2Image() = default;

// ---------------------------------------------------------------- create/open

Task<Result<std::shared_ptr<Qcow2Image>>> Qcow2Image::create(std::shared_ptr<block::Device> file,
                                                             Qcow2CreateOptions o) {
  const uint32_t cs = o.cluster_size;
  if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1)) != 0 ||
      o.backing_file.size() > kMaxBackingFileName || o.backing_format.size() > 255 ||
      (o.backing_file.empty() && !o.backing_format.empty()) || o.virtual_size > (uint64_t{1} << 61) ||
      (o.extended_l2 && cs < 16384))
    co_return make_error_code(std::errc::invalid_argument);
  if (file->capabilities().read_only) co_return make_error_code(std::errc::read_only_file_system);

  Qcow2Header h;
  h.version = 3;
  h.cluster_bits = uint32_t(std::countr_zero(cs));
  h.size = o.virtual_size;
  h.refcount_order = 4;
  if (o.extended_l2) h.incompatible_features |= kIncompatExtendedL2;
  h.header_length = kV3HeaderLength;
  h.backing_file = o.backing_file;
  h.backing_format = o.backing_format;
  h.l1_size = uint32_t(std::max<uint64_t>(1, h.min_l1_size()));
  if (uint64_t{h.l1_size} * 8 > kMaxL1Bytes) co_return make_error_code(std::errc::file_too_large);
  h.refcount_table_offset = cs;
  h.refcount_table_clusters = 1;

  std::shared_ptr<Qcow2Image> img(new Qcow2Image(std::move(file), h));
  if (img->io_align_ > h.subcluster_size()) co_return make_error_code(std::errc::invalid_argument);
  {
    std::lock_guard g(img->mu_);
    // No limit: cached_mapping() must answer for every cluster of a store.
    img->l2_.set_limit(UINT64_MAX);
    auto& rc = img->refcounts_.emplace(h.cluster_bits, h.refcount_order);
    rc.init_empty(cs, 1, 2);
    if (auto ec = rc.set(0, 1)) co_return ec;   // header
    if (auto ec = rc.set(cs, 1)) co_return ec;  // refcount table (block 0 lands at cluster 2)
    const uint64_t l1_bytes = uint64_t{h.l1_size} * 8;
    auto l1 = rc.alloc_contiguous(div_up(l1_bytes, cs));
    if (!l1) co_return l1.error();
    img->header_.l1_table_offset = *l1;
    img->header_cluster_ = Qcow2Bytes(cs);
    if (auto ec = encode_qcow2_header(img->header_, img->header_cluster_.span())) co_return ec;
    img->header_dirty_ = true;
    img->l1_ = std::make_unique<Qcow2MetaTable>(*l1, align_up(l1_bytes, img->io_align_));
    img->l1_->mark_all_dirty();
  }
  if (auto ec = co_await img->flush_metadata()) co_return ec;
  img->file_size_ = img->file_->size();
  co_return img;
}

Task<Result<std::shared_ptr<Qcow2Image>>> Qcow2Image::open(std::shared_ptr<block::Device> file,
                                                           Qcow2OpenOptions options,
                                                           std::string* why) {
  const uint64_t fsize = file->size();
  const std::size_t align = std::max<uint32_t>(1, file->capabilities().min_block);
  std::size_t prefix = align_down(std::min<uint64_t>(fsize, 4096), align);
  if (prefix < kV2HeaderLength)
    co_return fail(why, make_error_code(Errc::corrupt_image),
                   fmt::format("file too small for a qcow2 header ({} bytes)", fsize));
  Qcow2Bytes first(prefix);
  if (auto ec = co_await file->read(0, first.span()))
    co_return fail(why, ec, fmt::format("reading the qcow2 header: {}", ec.message()));
  const uint32_t bits = load_be32(first.data() + 20);
  if (load_be32(first.data()) == kMagic && bits >= kMinClusterBits && bits <= kMaxClusterBits) {
    const std::size_t n = align_down(std::min<uint64_t>(fsize, uint64_t{1} << bits), align);
    if (n > prefix) {
      first = Qcow2Bytes(n);
      if (auto ec = co_await file->read(0, first.span()))
        co_return fail(why, ec, fmt::format("reading the qcow2 header: {}", ec.message()));
    }
  }
  std::string reason;
  auto parsed = parse_qcow2_header(first.span(), fsize, &reason);
  if (!parsed) co_return fail(why, parsed.error(), reason);
  Qcow2Header h = std::move(*parsed);
  const uint64_t cs = h.cluster_size();
  if (align > cs)
    co_return fail(why, make_error_code(Errc::unsupported_feature),
                   fmt::format("qcow2 cluster size {} is below the file's I/O alignment {}", cs,
                               align));

  std::shared_ptr<Qcow2Image> img(new Qcow2Image(std::move(file), h));
  img->file_size_ = fsize;
  img->l2_.set_limit(l2_cache_limit_for(h, options.l2_cache_bytes));
  img->header_cluster_ = Qcow2Bytes(cs);
  std::copy_n(first.data(), std::min<std::size_t>(first.size(), cs), img->header_cluster_.data());
  img->writable_ = !options.read_only && !img->file_->capabilities().read_only;
  if (h.dirty()) {
    FLEECE_LOG_WARN("qcow2",
                    "qcow2 image is dirty (lazy refcounts were not written back); opening it "
                    "read-only, repair with qemu-img check -r all");
    img->writable_ = false;
    img->read_only_reason_ = "the image is dirty (lazy refcounts not repaired)";
  }
  if (h.nb_snapshots > 0) {
    img->writable_ = false;
    img->read_only_reason_ = "the image has internal snapshots";
  }
  if (auto ec = co_await img->load_metadata(why)) co_return ec;

  // Bitmaps (unless the caller keeps them) and other autoclear data become
  // stale as soon as fleece writes. Bit 0 without the extension is an error
  // the spec names; it is cleared too.
  const uint64_t keep = options.keep_bitmaps && h.has_bitmaps_extension ? kAutoclearBitmaps : 0;
  if (img->writable_ && (img->header_.autoclear_features & ~keep) != 0) {
    {
      std::lock_guard g(img->mu_);
      img->header_.autoclear_features &= keep;
      update_qcow2_header_fields(img->header_, img->header_cluster_.span());
      img->header_dirty_ = true;
    }
    if (auto ec = co_await img->flush_metadata())
      co_return fail(why, ec, fmt::format("clearing qcow2 autoclear features: {}", ec.message()));
  }
  co_return img;
}

Task<std::error_code> Qcow2Image::load_metadata(std::string* why) {
  const uint64_t cs = header_.cluster_size();
  const auto corrupt = make_error_code(Errc::corrupt_image);

  // L1: rounded up to the I/O alignment, which must still be inside the file.
  const uint64_t l1_bytes = uint64_t{header_.l1_size} * 8;
  const uint64_t l1_read = align_up(l1_bytes, io_align_);
  if (header_.l1_size > 0 && header_.l1_table_offset + l1_read > file_size_)
    co_return fail(why, corrupt, "qcow2 L1 table runs past the end of the file");
  auto l1 = std::make_unique<Qcow2MetaTable>(header_.l1_table_offset, l1_read);
  if (l1_read > 0) {
    if (auto ec = co_await file_->read(header_.l1_table_offset, {l1->data(), l1_read}))
      co_return fail(why, ec, fmt::format("reading the qcow2 L1 table: {}", ec.message()));
  }

  // Refcount table and every refcount block.
  const uint64_t rt_bytes = uint64_t{header_.refcount_table_clusters} * cs;
  auto rt = std::make_unique<Qcow2MetaTable>(header_.refcount_table_offset, rt_bytes);
  if (auto ec = co_await file_->read(header_.refcount_table_offset, {rt->data(), rt_bytes}))
    co_return fail(why, ec, fmt::format("reading the qcow2 refcount table: {}", ec.message()));
  Qcow2Refcounts rc(header_.cluster_bits, header_.refcount_order);
  const uint64_t rt_entries = rt_bytes / 8;
  std::vector<std::pair<uint64_t, uint64_t>> blocks;  // (index, offset)
  {
    std::unordered_set<uint64_t> seen;
    auto inside = [](uint64_t off, uint64_t start, uint64_t len) {
      return off >= start && off < start + len;
    };
    for (uint64_t i = 0; i < rt_entries; ++i) {
      const uint64_t raw = rt->entry(i);
      if (raw == 0) continue;
      const uint64_t off = raw & kRefTableOffsetMask;
      if ((raw & 0x1ff) != 0 || off % cs != 0 || off == 0 || off > file_size_ ||
          cs > file_size_ - off)
        co_return fail(why, corrupt,
                       fmt::format("qcow2 refcount table entry {} (0x{:x}) is invalid", i, raw));
      if (inside(off, header_.l1_table_offset, align_up(l1_bytes, cs)) ||
          inside(off, header_.refcount_table_offset, rt_bytes) || !seen.insert(off).second)
        co_return fail(why, corrupt,
                       fmt::format("qcow2 refcount block {} at {} overlaps other metadata", i,
                                   off));
      blocks.emplace_back(i, off);
    }
  }
  rc.load_table(std::move(rt));
  for (auto [i, off] : blocks) {
    auto b = std::make_unique<Qcow2MetaTable>(off, cs);
    if (auto ec = co_await file_->read(off, {b->data(), cs}))
      co_return fail(why, ec, fmt::format("reading qcow2 refcount block {}: {}", i, ec.message()));
    rc.load_block(i, std::move(b));
  }
  rc.finish_load();

  // Metadata must be refcounted, or allocation would hand it out as free.
  auto check_ref = [&](uint64_t off, const char* what) -> std::error_code {
    if (rc.get(off) == 0)
      return fail(why, corrupt, fmt::format("qcow2 {} at {} has refcount 0", what, off));
    return {};
  };
  if (auto ec = check_ref(0, "header")) co_return ec;
  for (uint64_t off = 0; off < l1_bytes; off += cs)
    if (auto ec = check_ref(header_.l1_table_offset + off, "L1 table")) co_return ec;
  for (uint64_t off = 0; off < rt_bytes; off += cs)
    if (auto ec = check_ref(header_.refcount_table_offset + off, "refcount table")) co_return ec;
  for (auto [i, off] : blocks)
    if (auto ec = check_ref(off, "refcount block")) co_return ec;

  uint64_t l2_tables = 0;
  for (uint64_t i = 0; i < header_.l1_size; ++i)
    if ((l1->entry(i) & kEntryOffsetMask) != 0) ++l2_tables;
  const uint64_t metadata = 1 + div_up(l1_bytes, cs) + header_.refcount_table_clusters +
                            blocks.size() + l2_tables;
  std::lock_guard g(mu_);
  data_clusters_ = rc.allocated_clusters() > metadata ? rc.allocated_clusters() - metadata : 0;
  l1_ = std::move(l1);
  refcounts_.emplace(std::move(rc));
  co_return std::error_code{};
}

// ---------------------------------------------------------------- foreign metadata

Qcow2Header Qcow2Image::header() const {
  std::lock_guard g(mu_);
  return header_;
}

uint64_t Qcow2Image::file_size() const { return file_->size(); }

Result<uint64_t> Qcow2Image::allocate_meta_clusters(uint64_t n) {
  if (auto ec = writable_check()) return ec;
  if (n == 0) return make_error_code(std::errc::invalid_argument);
  std::lock_guard g(mu_);
  return n == 1 ? refcounts_->alloc() : refcounts_->alloc_contiguous(n);
}

void Qcow2Image::free_after_flush(std::span<const uint64_t> host_clusters) {
  std::lock_guard g(mu_);
  free_after_flush_.insert(free_after_flush_.end(), host_clusters.begin(), host_clusters.end());
}

uint64_t Qcow2Image::refcount(uint64_t host_offset) const {
  std::lock_guard g(mu_);
  return refcounts_->get(host_offset);
}

bool Qcow2Image::overlaps_core_metadata(uint64_t host, uint64_t len) const {
  const uint64_t cs = header_.cluster_size();
  auto hit = [&](uint64_t start, uint64_t n) { return host < start + n && start < host + len; };
  std::lock_guard g(mu_);
  if (hit(0, cs) || hit(header_.l1_table_offset, align_up(uint64_t{header_.l1_size} * 8, cs)) ||
      hit(refcounts_->table_offset(), uint64_t{refcounts_->table_clusters()} * cs))
    return true;
  for (uint64_t i = 0; i < refcounts_->table_entries(); ++i) {
    const uint64_t off = refcounts_->table_entry(i) & kRefTableOffsetMask;
    if (off != 0 && hit(off, cs)) return true;
  }
  for (uint64_t i = 0; i < header_.l1_size; ++i) {
    const uint64_t off = l1_->entry(i) & kEntryOffsetMask;
    if (off != 0 && hit(off, cs)) return true;
  }
  return false;
}

Task<std::error_code> Qcow2Image::read_meta(uint64_t host, std::span<std::byte> out) {
  // A file may end inside its last cluster (QEMU writes a bitmap directory
  // only up to its size): the rest reads as zeroes.
  if (host >= file_->size()) co_return make_error_code(Errc::corrupt_image);
  co_return co_await read_host(host, out);
}

Task<std::error_code> Qcow2Image::write_meta(uint64_t host, std::span<const std::byte> data) {
  if (auto ec = writable_check()) co_return ec;
  {
    std::lock_guard g(mu_);
    for (uint64_t off = 0; off < data.size(); off += header_.cluster_size())
      if (refcounts_->get(host + off) == 0) co_return make_error_code(std::errc::invalid_argument);
  }
  co_return co_await file_->write(host, data, {});
}

Task<std::error_code> Qcow2Image::set_bitmaps_extension(
    const std::optional<Qcow2BitmapsExtension>& ext) {
  if (auto ec = writable_check()) co_return ec;
  {
    std::lock_guard g(mu_);
    if (auto ec = rewrite_qcow2_bitmaps_extension(header_, header_cluster_.span(), ext)) co_return ec;
    header_dirty_ = true;
  }
  co_return co_await flush_metadata();
}

Task<std::error_code> Qcow2Image::invalidate_bitmaps() {
  if (auto ec = writable_check()) co_return ec;
  {
    std::lock_guard g(mu_);
    if (!(header_.autoclear_features & kAutoclearBitmaps)) co_return std::error_code{};
    header_.autoclear_features &= ~kAutoclearBitmaps;
    update_qcow2_header_fields(header_, header_cluster_.span());
    header_dirty_ = true;
  }
  co_return co_await flush_metadata();
}

// ---------------------------------------------------------------- mapping

void Qcow2Image::set_backing(std::shared_ptr<block::Device> backing) {
  std::lock_guard g(mu_);
  backing_ = std::move(backing);
}

std::shared_ptr<block::Device> Qcow2Image::backing() const {
  std::lock_guard g(mu_);
  return backing_;
}

bool Qcow2Image::has_backing_locked() const { return !header_.backing_file.empty() || backing_; }

std::string Qcow2Image::backing_file() const {
  std::lock_guard g(mu_);
  return header_.backing_file;
}

std::string Qcow2Image::backing_format() const {
  std::lock_guard g(mu_);
  return header_.backing_format;
}

Task<std::error_code> Qcow2Image::set_backing_file(std::string file, std::string format) {
  if (auto ec = writable_check()) co_return ec;
  // When nothing else in the header awaits write-back, the header goes out
  // alone with FUA: the link is durable without flushing the whole file,
  // which for an image the guest writes means every dirty cluster and table
  // (block-commit relinks the overlay while the guest runs).
  bool alone = false;
  Qcow2Bytes bytes(header_cluster_.size());
  {
    auto guard = co_await flush_mutex_.lock(0, 0, false);  // no write-back in between
    {
      std::lock_guard g(mu_);
      alone = !header_dirty_;
      if (auto ec = rewrite_qcow2_backing(header_, header_cluster_.span(), file, format)) co_return ec;
      if (alone) std::copy_n(header_cluster_.data(), header_cluster_.size(), bytes.data());
      else header_dirty_ = true;
    }
    if (alone) {
      const block::WriteFlags fua{.fua = true};
      std::error_code ec = co_await file_->write(0, bytes.span(), fua);
      if (ec) {
        std::lock_guard g(mu_);
        header_dirty_ = true;  // the next flush writes it again
      }
      co_return ec;
    }
  }
  co_return co_await flush_metadata();
}

std::optional<Qcow2ClusterMapping> Qcow2Image::cached_mapping(uint64_t g) const {
  if (g >= header_.guest_clusters() || header_.extended_l2()) return std::nullopt;
  std::lock_guard lk(mu_);
  auto cached = cached_entry_locked(g);
  if (!cached || !*cached) return std::nullopt;
  const Entry* e = &**cached;
  switch (e->kind) {
    case EntryKind::unallocated: return Qcow2ClusterMapping{};
    case EntryKind::zero: return Qcow2ClusterMapping{Qcow2ClusterKind::zero, 0};
    case EntryKind::data: return Qcow2ClusterMapping{Qcow2ClusterKind::data, e->host};
    case EntryKind::compressed: break;
  }
  return std::nullopt;
}

std::optional<Result<Qcow2Image::Entry>> Qcow2Image::cached_entry_locked(uint64_t g) const {
  const uint64_t l2e = header_.l2_entries();
  if (auto t = l2_.find(g / l2e)) return decode_locked(*t, g % l2e);
  if ((l1_->entry(g / l2e) & kEntryOffsetMask) == 0) return Result<Entry>(Entry{});
  return std::nullopt;
}

Result<Qcow2Image::Entry> Qcow2Image::decode_locked(const Qcow2MetaTable& l2, uint64_t i) const {
  const bool extended = header_.extended_l2();
  const uint64_t raw = l2.entry(extended ? 2 * i : i);
  Entry e;
  if (raw & kL2Compressed) {
    e.kind = EntryKind::compressed;
    return e;
  }
  e.host = raw & kEntryOffsetMask;
  if (extended) {
    // Bit 0 is unused here; a subcluster is allocated or zero, not both,
    // and allocated ones need a host cluster.
    e.bitmap = l2.entry(2 * i + 1);
    const uint32_t alloc = uint32_t(e.bitmap), zero = uint32_t(e.bitmap >> 32);
    if ((raw & kL2Zero) || (alloc & zero) || (alloc != 0 && e.host == 0)) {
      FLEECE_LOG_ERROR("qcow2", "qcow2 extended L2 entry 0x{:x} 0x{:x} is invalid", raw, e.bitmap);
      return make_error_code(Errc::corrupt_image);
    }
    e.kind = e.host != 0 ? EntryKind::data : EntryKind::unallocated;
  } else if (header_.version >= 3 && (raw & kL2Zero))
    e.kind = EntryKind::zero;
  else if (e.host == 0)
    e.kind = EntryKind::unallocated;
  else
    e.kind = EntryKind::data;
  if (e.host != 0) {
    const uint64_t cs = header_.cluster_size();
    if (e.host % cs != 0 || refcounts_->get(e.host) == 0) {
      FLEECE_LOG_ERROR("qcow2", "qcow2 L2 entry 0x{:x} points at an invalid cluster", raw);
      return make_error_code(Errc::corrupt_image);
    }
  }
  return e;
}

void Qcow2Image::set_l2_locked(Qcow2MetaTable& l2, uint64_t i, uint64_t word, uint64_t bitmap) {
  if (header_.extended_l2()) {
    l2.set_entry(2 * i, word);
    l2.set_entry(2 * i + 1, bitmap);
  } else {
    l2.set_entry(i, word);
  }
}

std::error_code Qcow2Image::standard_only() const {
  if (!header_.extended_l2()) return {};
  return make_error_code(Errc::unsupported_feature);
}

Task<Result<Qcow2L2Cache::Table>> Qcow2Image::l2_table(uint64_t l1_index) {
  const uint64_t cs = header_.cluster_size();
  for (;;) {
    uint64_t off, evictions;
    // Tables made since the open lie past the size the file had then (and
    // are read back once dropped from the cache).
    const uint64_t fsize = std::max(file_size_, file_->size());
    {
      std::lock_guard g(mu_);
      if (l1_index >= header_.l1_size) co_return make_error_code(std::errc::invalid_argument);
      if (auto t = l2_.find(l1_index)) co_return t;
      const uint64_t raw = l1_->entry(l1_index);
      off = raw & kEntryOffsetMask;
      if (off == 0) co_return Qcow2L2Cache::Table{};
      if (off % cs != 0 || refcounts_->get(off) == 0 || off > fsize || cs > fsize - off) {
        FLEECE_LOG_ERROR("qcow2", "qcow2 L1 entry {} (0x{:x}) points at an invalid L2 table",
                         l1_index, raw);
        co_return make_error_code(Errc::corrupt_image);
      }
      evictions = l2_.evictions();
    }
    auto t = std::make_shared<Qcow2MetaTable>(off, cs);
    if (auto ec = co_await file_->read(off, {t->data(), cs})) co_return ec;
    bool over;
    {
      std::lock_guard g(mu_);
      if (auto have = l2_.find(l1_index)) co_return have;
      // A table dropped during the read may have been written back after
      // the read began: read it again.
      if (l2_.evictions() != evictions) continue;
      t = l2_.insert(l1_index, std::move(t));
      over = l2_.over_limit_dirty();
    }
    if (over) co_await settle_l2();
    co_return t;
  }
}

Task<Result<Qcow2Image::Entry>> Qcow2Image::lookup(uint64_t g, Qcow2L2Cache::Table* keep) {
  const uint64_t l2e = header_.l2_entries();
  auto t = co_await l2_table(g / l2e);
  if (!t) co_return t.error();
  if (keep) *keep = *t;
  if (*t == nullptr) co_return Entry{};
  std::lock_guard lk(mu_);
  co_return decode_locked(**t, g % l2e);
}

Task<Result<Qcow2L2Cache::Table>> Qcow2Image::l2_for_update(uint64_t l1_index) {
  for (;;) {
    auto t = co_await l2_table(l1_index);
    if (!t) co_return t.error();
    if (*t) co_return *t;
    Qcow2L2Cache::Table fresh;
    bool over;
    {
      std::lock_guard lk(mu_);
      // Made by another writer meanwhile (and maybe dropped again): load it.
      if ((l1_->entry(l1_index) & kEntryOffsetMask) != 0) continue;
      auto off = refcounts_->alloc();
      if (!off) co_return off.error();
      fresh = std::make_shared<Qcow2MetaTable>(*off, header_.cluster_size());
      fresh->mark_all_dirty();
      l1_->set_entry(l1_index, *off | kEntryCopied);
      fresh = l2_.insert(l1_index, std::move(fresh));
      over = l2_.over_limit_dirty();
    }
    if (over) co_await settle_l2();
    co_return fresh;
  }
}

bool Qcow2Image::l2_over_limit() const {
  std::lock_guard lk(mu_);
  return l2_.bytes() > l2_.limit();
}

Task<void> Qcow2Image::settle_l2() {
  {
    std::lock_guard lk(mu_);
    l2_.trim();  // tables pinned by requests that have finished may go now
    if (!l2_.over_limit_dirty()) co_return;
  }
  // Dirty tables hold the cache over its limit: written back, they can go
  // (flush_metadata drops them). A failure is logged there and leaves them
  // dirty, to be reported by the next flush.
  (void)co_await flush_metadata();
}

bool Qcow2Image::no_l2_tables() const {
  std::lock_guard lk(mu_);
  for (uint64_t i = 0; i < header_.l1_size; ++i)
    if ((l1_->entry(i) & kEntryOffsetMask) != 0) return false;
  return true;
}

uint64_t Qcow2Image::l2_cache_bytes() const {
  std::lock_guard lk(mu_);
  return l2_.bytes();
}

uint64_t Qcow2Image::l2_cache_limit() const {
  std::lock_guard lk(mu_);
  return l2_.limit();
}

std::error_code Qcow2Image::writable_check() const {
  if (writable_) return {};
  if (!read_only_reason_.empty()) {
    FLEECE_LOG_WARN("qcow2", "write refused: {}", read_only_reason_);
    return make_error_code(Errc::unsupported_feature);
  }
  return make_error_code(std::errc::read_only_file_system);
}

Task<Result<Qcow2ClusterMapping>> Qcow2Image::map_cluster(uint64_t g) {
  if (g >= header_.guest_clusters()) co_return make_error_code(std::errc::invalid_argument);
  if (auto ec = standard_only()) co_return ec;
  auto e = co_await lookup(g);
  if (!e) co_return e.error();
  switch (e->kind) {
    case EntryKind::unallocated: co_return Qcow2ClusterMapping{};
    case EntryKind::zero: co_return Qcow2ClusterMapping{Qcow2ClusterKind::zero, 0};
    case EntryKind::data: co_return Qcow2ClusterMapping{Qcow2ClusterKind::data, e->host};
    case EntryKind::compressed: break;
  }
  co_return make_error_code(Errc::unsupported_feature);
}

uint64_t Qcow2Image::data_bytes_in_use() const {
  std::lock_guard g(mu_);
  if (header_.extended_l2()) return data_subclusters_ * header_.subcluster_size();
  return data_clusters_ * header_.cluster_size();
}

uint64_t Qcow2Image::file_bytes_in_use() const {
  std::lock_guard g(mu_);
  return refcounts_->allocated_clusters() * header_.cluster_size();
}

block::Capabilities Qcow2Image::capabilities() const {
  const auto f = file_->capabilities();
  block::Capabilities c;
  c.read_only = !writable_;
  c.can_flush = true;
  c.can_fua = true;
  c.can_trim = writable_;
  c.can_zero = true;
  c.can_fast_zero = true;
  c.rotational = f.rotational;
  c.min_block = uint32_t(io_align_);
  c.preferred_block = uint32_t(header_.cluster_size());
  c.max_block = 32u << 20;
  return c;
}

// ---------------------------------------------------------------- cluster writes

Task<std::error_code> Qcow2Image::write_cluster_locked(uint64_t g, std::span<const std::byte> data) {
  const uint64_t l2e = header_.l2_entries();
  Qcow2L2Cache::Table t;  // pinned while in use
  auto e = co_await lookup(g, &t);
  if (!e) co_return e.error();
  if (e->kind == EntryKind::compressed) co_return make_error_code(Errc::unsupported_feature);
  if (e->host != 0) {
    uint64_t refs;
    {
      std::lock_guard lk(mu_);
      refs = refcounts_->get(e->host);
    }
    if (refs != 1) co_return make_error_code(Errc::unsupported_feature);  // shared by a snapshot
    // A private cluster is rewritten in place: no metadata changes.
    if (auto ec = co_await file_->write(e->host, data, {})) co_return ec;
    if (e->kind == EntryKind::zero) {
      std::lock_guard lk(mu_);
      set_l2_locked(*t, g % l2e, e->host | kEntryCopied);
    }
    co_return std::error_code{};
  }
  if (!t) {
    auto made = co_await l2_for_update(g / l2e);
    if (!made) co_return made.error();
    t = std::move(*made);
  }
  uint64_t host;
  {
    std::lock_guard lk(mu_);
    auto h = refcounts_->alloc();
    if (!h) co_return h.error();
    host = *h;
  }
  // Data first: the L2 entry that makes it visible comes after.
  if (auto ec = co_await file_->write(host, data, {})) {
    std::lock_guard lk(mu_);
    (void)refcounts_->release(host);  // never referenced: free at once
    co_return ec;
  }
  std::lock_guard lk(mu_);
  set_l2_locked(*t, g % l2e, host | kEntryCopied);
  ++data_clusters_;
  co_return std::error_code{};
}

Task<std::error_code> Qcow2Image::zero_cluster_locked(uint64_t g) {
  const uint64_t l2e = header_.l2_entries();
  Qcow2L2Cache::Table t;  // pinned while in use
  auto e = co_await lookup(g, &t);
  if (!e) co_return e.error();
  if (e->kind == EntryKind::compressed) co_return make_error_code(Errc::unsupported_feature);
  if (e->kind == EntryKind::zero && e->host == 0) co_return std::error_code{};
  if (header_.version < 3) {
    // No zero flag in v2: unallocated reads as zero only without a backing file.
    bool has_backing;
    {
      std::lock_guard lk(mu_);
      has_backing = has_backing_locked();
    }
    if (has_backing) {
      Qcow2Bytes zeros(header_.cluster_size());
      co_return co_await write_cluster_locked(g, zeros.span());
    }
    if (e->kind == EntryKind::unallocated) co_return std::error_code{};
  }
  if (!t) {
    auto made = co_await l2_for_update(g / l2e);
    if (!made) co_return made.error();
    t = std::move(*made);
  }
  std::lock_guard lk(mu_);
  set_l2_locked(*t, g % l2e, header_.version >= 3 ? kL2Zero : 0);
  if (e->host != 0) {
    // Freed only once the new L2 entry is on disk (flush_metadata).
    free_after_flush_.push_back(e->host);
    --data_clusters_;
  }
  co_return std::error_code{};
}

Task<std::error_code> Qcow2Image::write_cluster(uint64_t g, std::span<const std::byte> data,
                                                block::WriteFlags flags) {
  if (auto ec = writable_check()) co_return ec;
  if (auto ec = standard_only()) co_return ec;
  const uint64_t cs = header_.cluster_size();
  if (g >= header_.guest_clusters()) co_return make_error_code(std::errc::invalid_argument);
  const uint64_t tail = std::min(cs, header_.size - g * cs);
  if (data.size() != cs && data.size() != tail) co_return make_error_code(std::errc::invalid_argument);
  {
    auto guard = co_await clusters_.lock(g, g, false);
    std::error_code ec;
    if (data.size() == cs) {
      ec = co_await write_cluster_locked(g, data);
    } else {  // the short last cluster: stored whole, padded with zeroes
      Qcow2Bytes padded(cs);
      std::memcpy(padded.data(), data.data(), data.size());
      ec = co_await write_cluster_locked(g, padded.span());
    }
    if (ec) co_return ec;
  }
  if (l2_over_limit()) co_await settle_l2();
  if (flags.fua) co_return co_await flush();
  co_return std::error_code{};
}

Task<std::error_code> Qcow2Image::zero_cluster(uint64_t g) {
  if (auto ec = writable_check()) co_return ec;
  if (auto ec = standard_only()) co_return ec;
  if (g >= header_.guest_clusters()) co_return make_error_code(std::errc::invalid_argument);
  {
    auto guard = co_await clusters_.lock(g, g, false);
    if (auto ec = co_await zero_cluster_locked(g)) co_return ec;
  }
  if (l2_over_limit()) co_await settle_l2();
  co_return std::error_code{};
}

Task<std::error_code> Qcow2Image::discard_cluster(uint64_t g) {
  if (auto ec = co_await zero_cluster(g)) co_return ec;
  co_return co_await flush_metadata();
}

// ---------------------------------------------------------------- subclusters

std::error_code Qcow2Image::subcluster_range(uint64_t offset, uint64_t length, uint64_t* g,
                                             uint32_t* mask) const {
  const uint64_t cs = header_.cluster_size(), scs = header_.subcluster_size();
  const auto bad = make_error_code(std::errc::invalid_argument);
  if (length == 0 || offset % scs != 0 || offset > header_.size || length > header_.size - offset)
    return bad;
  const uint64_t end = offset + length;
  if (end % scs != 0 && end != header_.size) return bad;
  *g = offset / cs;
  if ((end - 1) / cs != *g) return bad;
  const uint64_t a = offset % cs / scs, b = div_up(end - *g * cs, scs);  // [a, b)
  *mask = uint32_t(((uint64_t{1} << b) - 1) & ~((uint64_t{1} << a) - 1));
  return {};
}

std::optional<Qcow2ClusterKind> Qcow2Image::cached_subcluster_kind(uint64_t offset) const {
  if (offset >= header_.size) return std::nullopt;
  const uint64_t g = offset >> header_.cluster_bits;
  if (!header_.extended_l2()) {
    auto m = cached_mapping(g);
    if (!m) return std::nullopt;
    return m->kind;
  }
  std::lock_guard lk(mu_);
  auto cached = cached_entry_locked(g);
  if (!cached || !*cached || (*cached)->kind == EntryKind::compressed) return std::nullopt;
  switch ((*cached)->subcluster(unsigned(offset % header_.cluster_size() / header_.subcluster_size()))) {
    case EntryKind::data: return Qcow2ClusterKind::data;
    case EntryKind::zero: return Qcow2ClusterKind::zero;
    default: return Qcow2ClusterKind::unallocated;
  }
}

Task<std::error_code> Qcow2Image::write_subclusters_locked(uint64_t g, uint32_t mask,
                                                           std::span<const std::byte> data) {
  const uint64_t l2e = header_.l2_entries(), scs = header_.subcluster_size();
  Qcow2L2Cache::Table t;  // pinned while in use
  auto e = co_await lookup(g, &t);
  if (!e) co_return e.error();
  if (e->kind == EntryKind::compressed) co_return make_error_code(Errc::unsupported_feature);
  uint64_t host = e->host;
  const bool fresh = host == 0;
  if (!fresh) {
    std::lock_guard lk(mu_);
    if (refcounts_->get(host) != 1) co_return make_error_code(Errc::unsupported_feature);
  } else {
    if (!t) {
      auto made = co_await l2_for_update(g / l2e);
      if (!made) co_return made.error();
      t = std::move(*made);
    }
    std::lock_guard lk(mu_);
    auto h = refcounts_->alloc();
    if (!h) co_return h.error();
    host = *h;
  }
  // Data first: the bits that make it visible come after. Subclusters of a
  // fresh host cluster that are never written stay holes in the file.
  if (auto ec = co_await file_->write(host + uint64_t(std::countr_zero(mask)) * scs, data, {})) {
    if (fresh) {
      std::lock_guard lk(mu_);
      (void)refcounts_->release(host);  // never referenced: free at once
    }
    co_return ec;
  }
  std::lock_guard lk(mu_);
  const uint64_t bitmap = (e->bitmap | mask) & ~(uint64_t{mask} << 32);
  set_l2_locked(*t, g % l2e, host | kEntryCopied, bitmap);
  data_subclusters_ += uint64_t(std::popcount(mask & ~uint32_t(e->bitmap)));
  if (fresh) ++data_clusters_;
  co_return std::error_code{};
}

Task<std::error_code> Qcow2Image::zero_subclusters_locked(uint64_t g, uint32_t mask) {
  const uint64_t l2e = header_.l2_entries();
  Qcow2L2Cache::Table t;  // pinned while in use
  auto e = co_await lookup(g, &t);
  if (!e) co_return e.error();
  if (e->kind == EntryKind::compressed) co_return make_error_code(Errc::unsupported_feature);
  const uint32_t alloc = uint32_t(e->bitmap) & ~mask;
  const uint64_t bitmap = alloc | ((e->bitmap >> 32 | mask) << 32);
  if (bitmap == e->bitmap) co_return std::error_code{};  // reads as zeroes already
  if (!t) {
    auto made = co_await l2_for_update(g / l2e);
    if (!made) co_return made.error();
    t = std::move(*made);
  }
  std::lock_guard lk(mu_);
  uint64_t host = e->host;
  data_subclusters_ -= uint64_t(std::popcount(uint32_t(e->bitmap) & mask));
  if (alloc == 0 && host != 0) {
    // Nothing left in the host cluster: freed once the new entry is on disk.
    free_after_flush_.push_back(host);
    --data_clusters_;
    host = 0;
  }
  set_l2_locked(*t, g % l2e, host != 0 ? host | kEntryCopied : 0, bitmap);
  co_return std::error_code{};
}

Task<std::error_code> Qcow2Image::write_subclusters(uint64_t offset,
                                                    std::span<const std::byte> data) {
  if (!header_.extended_l2()) {
    if (offset % header_.cluster_size() != 0) co_return make_error_code(std::errc::invalid_argument);
    co_return co_await write_cluster(offset >> header_.cluster_bits, data);
  }
  if (auto ec = writable_check()) co_return ec;
  uint64_t g;
  uint32_t mask;
  if (auto ec = subcluster_range(offset, data.size(), &g, &mask)) co_return ec;
  {
    auto guard = co_await clusters_.lock(g, g, false);
    std::error_code ec;
    const uint64_t scs = header_.subcluster_size();
    if (data.size() % scs == 0) {
      ec = co_await write_subclusters_locked(g, mask, data);
    } else {  // the short last subcluster: stored whole, padded with zeroes
      Qcow2Bytes padded(align_up(data.size(), scs));
      std::memcpy(padded.data(), data.data(), data.size());
      ec = co_await write_subclusters_locked(g, mask, padded.span());
    }
    if (ec) co_return ec;
  }
  if (l2_over_limit()) co_await settle_l2();
  co_return std::error_code{};
}

Task<std::error_code> Qcow2Image::zero_subclusters(uint64_t offset, uint64_t length) {
  if (!header_.extended_l2()) {
    if (offset % header_.cluster_size() != 0 ||
        length != std::min(header_.cluster_size(), header_.size - std::min(offset, header_.size)))
      co_return make_error_code(std::errc::invalid_argument);
    co_return co_await zero_cluster(offset >> header_.cluster_bits);
  }
  if (auto ec = writable_check()) co_return ec;
  uint64_t g;
  uint32_t mask;
  if (auto ec = subcluster_range(offset, length, &g, &mask)) co_return ec;
  {
    auto guard = co_await clusters_.lock(g, g, false);
    if (auto ec = co_await zero_subclusters_locked(g, mask)) co_return ec;
  }
  if (l2_over_limit()) co_await settle_l2();
  co_return std::error_code{};
}

Task<std::error_code> Qcow2Image::discard_subclusters(uint64_t offset, uint64_t length) {
  if (auto ec = co_await zero_subclusters(offset, length)) co_return ec;
  if (auto ec = co_await flush_metadata()) co_return ec;
  if (!header_.extended_l2()) co_return std::error_code{};
  // The entry on disk no longer points at those subclusters: where the
  // host cluster stays (other subclusters in use), their bytes go back to
  // the file system. Under the cluster's lock, so no write refills them
  // in between.
  uint64_t g;
  uint32_t mask;
  if (auto ec = subcluster_range(offset, length, &g, &mask)) co_return ec;
  auto guard = co_await clusters_.lock(g, g, false);
  auto e = co_await lookup(g);
  if (!e || e->kind != EntryKind::data || (uint32_t(e->bitmap) & mask) != 0)
    co_return std::error_code{};
  const uint64_t scs = header_.subcluster_size();
  const uint64_t first = uint64_t(std::countr_zero(mask)), count = uint64_t(std::popcount(mask));
  // Advisory: a file system that cannot punch holes keeps the bytes.
  (void)co_await file_->trim(e->host + first * scs, count * scs, {});
  co_return std::error_code{};
}

// ---------------------------------------------------------------- Device

Task<std::error_code> Qcow2Image::read_backing(std::shared_ptr<block::Device> backing,
                                               uint64_t offset, std::span<std::byte> out) {
  uint64_t n = 0;
  if (backing) {
    const uint64_t bsize = backing->size();
    n = offset < bsize ? std::min<uint64_t>(out.size(), bsize - offset) : 0;
    if (n > 0)
      if (auto ec = co_await backing->read(offset, out.first(n))) co_return ec;
  }
  std::memset(out.data() + n, 0, out.size() - n);
  co_return std::error_code{};
}

Task<std::error_code> Qcow2Image::read_host(uint64_t host, std::span<std::byte> out) {
  // A file may end inside its last data cluster; the rest reads as zeroes.
  const uint64_t fsize = file_->size();
  uint64_t n = host < fsize ? std::min<uint64_t>(out.size(), fsize - host) : 0;
  if (n < out.size()) n = align_down(n, io_align_);
  if (n > 0)
    if (auto ec = co_await file_->read(host, out.first(n))) co_return ec;
  std::memset(out.data() + n, 0, out.size() - n);
  co_return std::error_code{};
}

Task<std::error_code> Qcow2Image::read(uint64_t offset, std::span<std::byte> out) {
  if (offset > header_.size || out.size() > header_.size - offset)
    co_return make_error_code(std::errc::invalid_argument);
  if (out.empty()) co_return std::error_code{};
  const uint64_t cb = header_.cluster_bits;
  const uint64_t cs = header_.cluster_size();
  const uint64_t first = offset >> cb, last = (offset + out.size() - 1) >> cb;
  auto guard = co_await clusters_.lock(first, last, true);
  auto backing = this->backing();

  // Adjacent pieces that read from one place are merged into one request.
  enum class Src { none, host, backing } run = Src::none;
  uint64_t run_pos = 0, run_len = 0, run_host = 0;  // run_pos: offset in out
  auto issue = [&]() -> Task<std::error_code> {
    std::error_code ec;
    if (run == Src::host)
      ec = co_await read_host(run_host, out.subspan(run_pos, run_len));
    else if (run == Src::backing)
      ec = co_await read_backing(backing, offset + run_pos, out.subspan(run_pos, run_len));
    run = Src::none;
    run_len = 0;
    co_return ec;
  };
  const bool extended = header_.extended_l2();
  const uint64_t scs = header_.subcluster_size();
  for (uint64_t g = first; g <= last; ++g) {
    const uint64_t seg_start = std::max(offset, g << cb);
    const uint64_t seg_end = std::min(offset + out.size(), (g + 1) << cb);
    auto e = co_await lookup(g);
    if (!e) co_return e.error();
    // One piece per cluster; per subcluster with extended L2.
    for (uint64_t p = seg_start, q; p < seg_end; p = q) {
      EntryKind kind = e->kind;
      q = seg_end;
      if (extended && kind != EntryKind::compressed) {
        kind = e->subcluster(unsigned((p & (cs - 1)) / scs));
        q = std::min(seg_end, align_down(p, scs) + scs);
      }
      const uint64_t pos = p - offset, len = q - p;
      switch (kind) {
        case EntryKind::compressed:
          FLEECE_LOG_ERROR("qcow2", "reading compressed qcow2 clusters is not supported");
          co_return make_error_code(Errc::unsupported_feature);
        case EntryKind::zero:
          if (auto ec = co_await issue()) co_return ec;
          std::memset(out.data() + pos, 0, len);
          break;
        case EntryKind::data: {
          const uint64_t host = e->host + (p & (cs - 1));
          if (run != Src::host || run_host + run_len != host) {
            if (auto ec = co_await issue()) co_return ec;
            run = Src::host;
            run_pos = pos;
            run_host = host;
          }
          run_len += len;
          break;
        }
        case EntryKind::unallocated:
          if (run != Src::backing) {
            if (auto ec = co_await issue()) co_return ec;
            run = Src::backing;
            run_pos = pos;
          }
          run_len += len;
          break;
      }
    }
  }
  auto ec = co_await issue();
  guard.release();
  if (l2_over_limit()) co_await settle_l2();
  co_return ec;
}

Task<std::error_code> Qcow2Image::write_partial_locked(uint64_t g, uint64_t in_cluster,
                                                       std::span<const std::byte> data) {
  const uint64_t cs = header_.cluster_size();
  auto e = co_await lookup(g);
  if (!e) co_return e.error();
  if (e->kind == EntryKind::data) {
    uint64_t refs;
    {
      std::lock_guard lk(mu_);
      refs = refcounts_->get(e->host);
    }
    if (refs == 1) co_return co_await file_->write(e->host + in_cluster, data, {});
  }
  // Copy-on-write: the rest of the cluster comes from what reads see now.
  Qcow2Bytes buf(cs);
  switch (e->kind) {
    case EntryKind::compressed: co_return make_error_code(Errc::unsupported_feature);
    case EntryKind::zero: break;
    case EntryKind::data:
      if (auto ec = co_await read_host(e->host, buf.span())) co_return ec;
      break;
    case EntryKind::unallocated: {
      const uint64_t start = g * cs;
      const uint64_t n = std::min(cs, header_.size - start);
      // A named copy: GCC 12 may destroy temporaries of a co_await twice.
      auto from = backing();
      if (auto ec = co_await read_backing(from, start, buf.span().first(n))) co_return ec;
      break;
    }
  }
  std::memcpy(buf.data() + in_cluster, data.data(), data.size());
  co_return co_await write_cluster_locked(g, buf.span());
}

Task<std::error_code> Qcow2Image::write(uint64_t offset, std::span<const std::byte> data,
                                        block::WriteFlags flags) {
  if (auto ec = writable_check()) co_return ec;
  if (auto ec = standard_only()) co_return ec;
  if (offset > header_.size || data.size() > header_.size - offset)
    co_return make_error_code(std::errc::invalid_argument);
  if (data.empty()) co_return std::error_code{};
  const uint64_t cb = header_.cluster_bits;
  const uint64_t cs = header_.cluster_size();
  const uint64_t first = offset >> cb, last = (offset + data.size() - 1) >> cb;
  {
    auto guard = co_await clusters_.lock(first, last, false);
    for (uint64_t g = first; g <= last; ++g) {
      const uint64_t seg_start = std::max(offset, g << cb);
      const uint64_t seg_end = std::min(offset + data.size(), (g + 1) << cb);
      auto piece = data.subspan(seg_start - offset, seg_end - seg_start);
      std::error_code ec;
      if (piece.size() == cs)
        ec = co_await write_cluster_locked(g, piece);
      else
        ec = co_await write_partial_locked(g, seg_start & (cs - 1), piece);
      if (ec) co_return ec;
    }
  }
  if (l2_over_limit()) co_await settle_l2();
  if (flags.fua) co_return co_await flush();
  co_return std::error_code{};
}

Task<std::error_code> Qcow2Image::write_zeroes(uint64_t offset, uint64_t length,
                                               block::ZeroFlags flags) {
  if (auto ec = writable_check()) co_return ec;
  if (auto ec = standard_only()) co_return ec;
  if (offset > header_.size || length > header_.size - offset)
    co_return make_error_code(std::errc::invalid_argument);
  if (length == 0) co_return std::error_code{};
  const uint64_t cb = header_.cluster_bits;
  const uint64_t cs = header_.cluster_size();
  const uint64_t end = offset + length;
  const uint64_t first = offset >> cb, last = (end - 1) >> cb;
  {
    auto guard = co_await clusters_.lock(first, last, false);
    bool has_backing;
    {
      std::lock_guard lk(mu_);
      has_backing = has_backing_locked();
    }
    for (uint64_t g = first; g <= last; ++g) {
      const uint64_t seg_start = std::max(offset, g << cb);
      const uint64_t seg_end = std::min(end, (g + 1) << cb);
      if (seg_end - seg_start == cs) {
        if (auto ec = co_await zero_cluster_locked(g)) co_return ec;
        continue;
      }
      auto e = co_await lookup(g);
      if (!e) co_return e.error();
      if (e->kind == EntryKind::zero ||
          (e->kind == EntryKind::unallocated && !has_backing))
        continue;  // already reads as zeroes
      if (flags.fast_only) co_return make_error_code(std::errc::operation_not_supported);
      Qcow2Bytes zeros(seg_end - seg_start);
      if (auto ec = co_await write_partial_locked(g, seg_start & (cs - 1), zeros.span()))
        co_return ec;
    }
  }
  if (l2_over_limit()) co_await settle_l2();
  if (flags.fua) co_return co_await flush();
  co_return std::error_code{};
}

Task<std::error_code> Qcow2Image::trim(uint64_t offset, uint64_t length, block::WriteFlags flags) {
  if (auto ec = writable_check()) co_return ec;
  if (auto ec = standard_only()) co_return ec;
  if (offset > header_.size || length > header_.size - offset)
    co_return make_error_code(std::errc::invalid_argument);
  const uint64_t cs = header_.cluster_size();
  // Whole clusters only (inward); the last cluster counts whole if it ends
  // at the virtual size.
  const uint64_t first = div_up(offset, cs);
  const uint64_t end = offset + length;
  const uint64_t stop = end == header_.size ? div_up(end, cs) : end / cs;
  if (first < stop) {
    auto guard = co_await clusters_.lock(first, stop - 1, false);
    for (uint64_t g = first; g < stop; ++g)
      if (auto ec = co_await zero_cluster_locked(g)) co_return ec;
  }
  if (l2_over_limit()) co_await settle_l2();
  if (flags.fua) co_return co_await flush();
  co_return std::error_code{};
}

Task<std::error_code> Qcow2Image::flush() { co_return co_await flush_metadata(); }

Task<std::error_code> Qcow2Image::block_status(uint64_t offset, uint64_t length,
                                               std::vector<block::Extent>& out) {
  if (offset > header_.size || length > header_.size - offset)
    co_return make_error_code(std::errc::invalid_argument);
  if (length == 0) co_return std::error_code{};
  const uint64_t cb = header_.cluster_bits;
  const uint64_t l2e = header_.l2_entries();
  const uint64_t end = offset + length;
  auto backing = this->backing();
  auto push = [&](uint64_t len, uint32_t flags, uint32_t depth) {
    if (!out.empty() && out.back().flags == flags && out.back().depth == depth)
      out.back().length += len;
    else
      out.push_back(block::Extent{len, flags, depth});
  };
  // Unallocated runs are asked of the backing device in one go.
  uint64_t run_start = 0, run_len = 0;
  auto flush_run = [&]() -> Task<std::error_code> {
    uint64_t pos = run_start;
    const uint64_t stop = run_start + run_len;
    run_len = 0;
    const uint64_t bsize = backing ? backing->size() : 0;
    while (pos < stop) {
      if (!backing || pos >= bsize) {
        push(stop - pos, block::kExtentHole | block::kExtentZero, 0);
        break;
      }
      std::vector<block::Extent> sub;
      const uint64_t want = std::min(stop, bsize) - pos;
      if (auto ec = co_await backing->block_status(pos, want, sub)) co_return ec;
      if (sub.empty()) co_return make_error_code(std::errc::io_error);
      for (auto& x : sub) {
        if (pos >= stop || x.length == 0) break;
        const uint64_t n = std::min(x.length, std::min(stop, bsize) - pos);
        push(n, x.flags, x.depth == 0 ? 0 : x.depth + 1);
        pos += n;
        if (pos >= bsize) break;
      }
    }
    co_return std::error_code{};
  };
  // Bounded work per call: callers continue from where the extents stop.
  const uint64_t max_clusters = 1u << 16;
  uint64_t examined = 0;
  uint64_t pos = offset;
  while (pos < end && examined < max_clusters) {
    const uint64_t g = pos >> cb;
    auto t = co_await l2_table(g / l2e);
    if (!t) co_return t.error();
    uint64_t span_end;
    Result<Entry> e = Entry{};
    if (*t == nullptr) {  // a whole L2 range is unallocated
      span_end = std::min(end, ((g / l2e) + 1) * l2e << cb);
    } else {
      span_end = std::min(end, (g + 1) << cb);
      std::lock_guard lk(mu_);
      e = decode_locked(**t, g % l2e);
      if (e && header_.extended_l2() && e->kind != EntryKind::compressed) {
        const uint64_t scs = header_.subcluster_size();
        span_end = std::min(end, align_down(pos, scs) + scs);
        e->kind = e->subcluster(unsigned(pos % header_.cluster_size() / scs));
      }
    }
    if (!e) co_return e.error();
    ++examined;
    const uint64_t len = span_end - pos;
    if (e->kind == EntryKind::unallocated) {
      if (run_len == 0) run_start = pos;
      run_len += len;
    } else {
      if (run_len)
        if (auto ec = co_await flush_run()) co_return ec;
      if (e->kind == EntryKind::zero)
        push(len, block::kExtentHole | block::kExtentZero, 1);
      else
        push(len, 0, 1);
    }
    pos = span_end;
  }
  if (run_len)
    if (auto ec = co_await flush_run()) co_return ec;
  co_return std::error_code{};
}

// ---------------------------------------------------------------- write-back

void Qcow2Image::release_locked(uint64_t host) {
  const uint64_t c = host >> header_.cluster_bits;
  const bool sent = c < sent_.size() && sent_[c];
  if (auto ec = sent ? refcounts_->retire(host) : refcounts_->release(host)) {
    FLEECE_LOG_ERROR("qcow2", "freeing qcow2 cluster at {}: refcount already 0", host);
  } else if (sent) {
    to_punch_.push_back(host);
  }
}

void Qcow2Image::mark_all_dirty_locked() {
  header_dirty_ = true;
  if (l1_) l1_->mark_all_dirty();
  l2_.mark_all_dirty();
  refcounts_->mark_all_dirty();
}

Task<std::error_code> Qcow2Image::flush_metadata() {
  auto guard = co_await flush_mutex_.lock(0, 0, false);
  for (int round = 0; round < 2; ++round) {
    Qcow2Refcounts::Writes rc;
    std::optional<Qcow2MetaWrite> header;
    std::vector<Qcow2MetaWrite> l2;
    std::optional<Qcow2MetaWrite> l1;
    std::vector<uint64_t> frees;
    {
      std::lock_guard lk(mu_);
      rc = refcounts_->take_writes(io_align_);
      if (rc.table_moved) {
        header_.refcount_table_offset = refcounts_->table_offset();
        header_.refcount_table_clusters = refcounts_->table_clusters();
        update_qcow2_header_fields(header_, header_cluster_.span());
        header_dirty_ = true;
      }
      if (header_dirty_) {
        header = Qcow2MetaWrite{0, Qcow2Bytes(header_cluster_.size())};
        std::copy_n(header_cluster_.data(), header_cluster_.size(), header->bytes.data());
        header_dirty_ = false;
      }
      l2_.take_dirty(io_align_, l2);
      if (l1_ && l1_->dirty()) l1 = l1_->take_dirty(io_align_);
      frees = std::exchange(free_after_flush_, {});
      for (uint64_t c : refcounts_->take_released()) frees.push_back(c);
    }
    if (round > 0 && rc.blocks.empty() && rc.table.empty() && !header && l2.empty() && !l1)
      break;

    bool pending = false;  // written since the last barrier
    auto write_all = [&](std::vector<Qcow2MetaWrite>& ws) -> Task<std::error_code> {
      for (auto& w : ws) {
        if (auto ec = co_await file_->write(w.file_offset, w.bytes.span(), {})) co_return ec;
        pending = true;
      }
      co_return std::error_code{};
    };
    // A stage may only reach the disk after what it points at.
    auto barrier = [&]() -> Task<std::error_code> {
      if (!pending) co_return std::error_code{};
      pending = false;
      co_return co_await file_->flush();
    };
    std::vector<Qcow2MetaWrite> one;
    std::error_code ec = co_await write_all(rc.blocks);
    if (!ec && !rc.table.empty()) {
      ec = co_await barrier();
      if (!ec) ec = co_await write_all(rc.table);
    }
    if (!ec && header) {
      ec = co_await barrier();
      one.clear();
      one.push_back(std::move(*header));
      if (!ec) ec = co_await write_all(one);
    }
    if (!ec && !l2.empty()) {
      ec = co_await barrier();
      if (!ec) ec = co_await write_all(l2);
    }
    if (!ec && l1) {
      ec = co_await barrier();
      one.clear();
      one.push_back(std::move(*l1));
      if (!ec) ec = co_await write_all(one);
    }
    if (!ec) ec = co_await file_->flush();
    std::lock_guard lk(mu_);
    l2_.end_writeback();
    if (ec) {
      // Nothing is known about what reached the disk: write it all again.
      mark_all_dirty_locked();
      free_after_flush_.insert(free_after_flush_.end(), frees.begin(), frees.end());
      FLEECE_LOG_ERROR("qcow2", "writing back qcow2 metadata failed: {}", ec.message());
      co_return ec;
    }
    // The references to these clusters are gone on disk: they may be
    // reused, once no file range is sending them (those file ranges were
    // made of are retired instead: see release_locked()).
    for (uint64_t h : frees) {
      if (pinned_locked(h))
        pinned_frees_.push_back(h);
      else
        release_locked(h);
    }
    l2_.trim();  // what was written back may go now
    if (frees.empty() && round == 0) break;
  }
  std::vector<uint64_t> punch;
  {
    std::lock_guard lk(mu_);
    punch = std::exchange(to_punch_, {});
  }
  // One punch per run of adjacent clusters (a large discard frees many).
  // Advisory: a file system that cannot punch holes keeps the bytes.
  std::sort(punch.begin(), punch.end());
  const uint64_t cs = header_.cluster_size();
  for (size_t i = 0; i < punch.size();) {
    size_t j = i + 1;
    while (j < punch.size() && punch[j] == punch[j - 1] + cs) ++j;
    (void)co_await file_->trim(punch[i], (j - i) * cs, {});
    i = j;
  }
  co_return std::error_code{};
}

}  // namespace fleece::cow
