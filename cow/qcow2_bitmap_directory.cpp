#include "cow/qcow2_bitmap_directory.hpp"

#include "cow/qcow2_format.hpp"
#include "util/errors.hpp"

#include <fmt/format.h>

#include <cstring>
#include <unordered_set>

namespace fleece::cow {

using namespace qcow2;

uint64_t qcow2_bitmap_table_entries(uint64_t virtual_size, uint32_t granularity_bits,
                                    uint32_t cluster_bits) {
  const uint64_t granules = div_up(virtual_size, uint64_t{1} << granularity_bits);
  return div_up(div_up(granules, 8), uint64_t{1} << cluster_bits);
}

namespace {

std::error_code fail(std::string* why, Errc e, std::string msg) {
  if (why) *why = std::move(msg);
  return make_error_code(e);
}

constexpr std::size_t kEntryHeader = 24;

}  // namespace

Result<std::vector<Qcow2BitmapEntry>> parse_qcow2_bitmap_directory(
    std::span<const std::byte> dir, uint32_t nb_bitmaps, uint64_t virtual_size,
    uint32_t cluster_bits, std::string* why) {
  if (nb_bitmaps == 0 || nb_bitmaps > kMaxBitmaps)
    return fail(why, Errc::corrupt_image,
                fmt::format("qcow2 bitmaps extension lists {} bitmaps (1..{} allowed)",
                            nb_bitmaps, kMaxBitmaps));
  std::vector<Qcow2BitmapEntry> out;
  std::unordered_set<std::string> names;
  std::size_t off = 0;
  for (uint32_t i = 0; i < nb_bitmaps; ++i) {
    if (dir.size() - off < kEntryHeader)
      return fail(why, Errc::corrupt_image,
                  fmt::format("qcow2 bitmap directory ends inside entry {} (directory {} bytes)",
                              i, dir.size()));
    const std::byte* p = dir.data() + off;
    Qcow2BitmapEntry e;
    e.table_offset = load_be64(p);
    e.table_size = load_be32(p + 8);
    e.flags = load_be32(p + 12);
    const uint8_t type = uint8_t(p[16]);
    e.granularity_bits = uint8_t(p[17]);
    const uint16_t name_size = load_be16(p + 18);
    const uint32_t extra = load_be32(p + 20);
    const uint64_t len = align_up(kEntryHeader + uint64_t{extra} + name_size, 8);
    if (len > dir.size() - off)
      return fail(why, Errc::corrupt_image,
                  fmt::format("qcow2 bitmap directory entry {} ({} bytes) runs past the "
                              "directory ({} bytes)",
                              i, len, dir.size()));
    if (name_size == 0 || name_size > 1023)
      return fail(why, Errc::corrupt_image,
                  fmt::format("qcow2 bitmap {} has a name of {} bytes (1..1023)", i, name_size));
    e.name.assign(reinterpret_cast<const char*>(p + kEntryHeader + extra), name_size);
    const std::string label = fmt::format("qcow2 bitmap {} ('{}')", i, e.name);
    if (!names.insert(e.name).second)
      return fail(why, Errc::corrupt_image, label + ": the name appears twice");
    if (type != kBitmapTypeDirty)
      return fail(why, Errc::corrupt_image,
                  fmt::format("{}: type {} is not a dirty tracking bitmap (1)", label, type));
    if (e.flags & ~kBitmapKnownFlags)
      return fail(why, Errc::corrupt_image,
                  fmt::format("{}: reserved flags 0x{:x} are set", label, e.flags));
    if (e.granularity_bits < kMinBitmapGranularityBits ||
        e.granularity_bits > kMaxBitmapGranularityBits)
      return fail(why, Errc::corrupt_image,
                  fmt::format("{}: granularity_bits {} is out of range ({}..{})", label,
                              e.granularity_bits, kMinBitmapGranularityBits,
                              kMaxBitmapGranularityBits));
    if (extra != 0)
      return fail(why, Errc::unsupported_feature,
                  fmt::format("{}: {} bytes of extra data, which fleece cannot keep", label,
                              extra));
    for (uint64_t k = kEntryHeader + extra + name_size; k < len; ++k)
      if (p[k] != std::byte{0})
        return fail(why, Errc::corrupt_image, label + ": non-zero padding");
    const uint64_t cs = uint64_t{1} << cluster_bits;
    if (e.table_offset == 0 || e.table_offset % cs != 0)
      return fail(why, Errc::corrupt_image,
                  fmt::format("{}: bitmap table offset {} is not a non-zero multiple of the "
                              "cluster size",
                              label, e.table_offset));
    const uint64_t want = qcow2_bitmap_table_entries(virtual_size, e.granularity_bits, cluster_bits);
    if (e.table_size != want)
      return fail(why, Errc::corrupt_image,
                  fmt::format("{}: bitmap table has {} entries, the virtual size {} at "
                              "granularity {} needs {}",
                              label, e.table_size, virtual_size, e.granularity(), want));
    out.push_back(std::move(e));
    off += len;
  }
  if (off != dir.size())
    return fail(why, Errc::corrupt_image,
                fmt::format("qcow2 bitmap directory is {} bytes but its {} entries take {}",
                            dir.size(), nb_bitmaps, off));
  return out;
}

std::vector<std::byte> encode_qcow2_bitmap_directory(std::span<const Qcow2BitmapEntry> entries) {
  std::vector<std::byte> out;
  for (const auto& e : entries) {
    const std::size_t at = out.size();
    out.resize(at + align_up(kEntryHeader + e.name.size(), 8));
    std::byte* p = out.data() + at;
    store_be64(p, e.table_offset);
    store_be32(p + 8, e.table_size);
    store_be32(p + 12, e.flags);
    p[16] = std::byte{kBitmapTypeDirty};
    p[17] = std::byte(e.granularity_bits);
    store_be16(p + 18, uint16_t(e.name.size()));
    store_be32(p + 20, 0);
    std::memcpy(p + kEntryHeader, e.name.data(), e.name.size());
  }
  return out;
}

}  // namespace fleece::cow
