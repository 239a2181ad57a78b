#include "cow/qcow2_header.hpp"

#include "cow/qcow2_format.hpp"
#include "util/errors.hpp"

#include <fmt/format.h>

#include <cstring>

namespace fleece::cow {

using namespace qcow2;

bool Qcow2Header::dirty() const { return (incompatible_features & kIncompatDirty) != 0; }
bool Qcow2Header::extended_l2() const {
  return (incompatible_features & kIncompatExtendedL2) != 0;
}

namespace {

std::error_code fail(std::string* why, Errc e, std::string msg) {
  if (why) *why = std::move(msg);
  return make_error_code(e);
}

std::string feature_name(const Qcow2Header& h, uint8_t type, unsigned bit) {
  for (const auto& f : h.feature_names)
    if (f.type == type && f.bit == bit) return f.name;
  return {};
}

bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return a < b + blen && b < a + alen;
}

std::error_code walk_extensions(std::span<const std::byte> data, uint64_t start, uint64_t end,
                                Qcow2Header& h, std::string* why) {
  uint64_t off = start;
  bool seen_format = false, seen_table = false;
  while (off + 8 <= end) {
    const uint32_t type = load_be32(data.data() + off);
    const uint32_t len = load_be32(data.data() + off + 4);
    if (type == kExtEnd) return {};
    const uint64_t body = off + 8;
    if (len > end - body)
      return fail(why, Errc::corrupt_image,
                  fmt::format("qcow2 header extension 0x{:08x} at byte {} overruns the header area "
                              "(length {}, area ends at {})",
                              type, off, len, end));
    const std::byte* p = data.data() + body;
    switch (type) {
      case kExtBackingFormat:
        if (seen_format)
          return fail(why, Errc::corrupt_image, "qcow2 backing format extension appears twice");
        seen_format = true;
        if (len > 1023)
          return fail(why, Errc::corrupt_image,
                      fmt::format("qcow2 backing format name is {} bytes long", len));
        h.backing_format.assign(reinterpret_cast<const char*>(p), len);
        // Padding may make it look NUL-terminated; the name itself is not.
        h.backing_format.resize(strnlen(h.backing_format.c_str(), h.backing_format.size()));
        break;
      case kExtFeatureTable:
        if (seen_table)
          return fail(why, Errc::corrupt_image, "qcow2 feature name table appears twice");
        seen_table = true;
        for (uint32_t i = 0; i + 48 <= len; i += 48) {
          Qcow2FeatureName f;
          f.type = uint8_t(p[i]);
          f.bit = uint8_t(p[i + 1]);
          const char* name = reinterpret_cast<const char*>(p + i + 2);
          f.name.assign(name, strnlen(name, 46));
          h.feature_names.push_back(std::move(f));
        }
        break;
      case kExtBitmaps:
        // qcow2.txt "Bitmaps extension": nb_bitmaps(4) reserved(4)
        // bitmap_directory_size(8) bitmap_directory_offset(8).
        if (h.has_bitmaps_extension) {
          h.bitmaps_extension_error = "qcow2 bitmaps extension appears twice";
          break;
        }
        h.has_bitmaps_extension = true;
        if (len != 24) {
          h.bitmaps_extension_error =
              fmt::format("qcow2 bitmaps extension is {} bytes long (must be 24)", len);
          break;
        }
        if (load_be32(p + 4) != 0) {
          h.bitmaps_extension_error = "qcow2 bitmaps extension has non-zero reserved bytes";
          break;
        }
        h.bitmaps.nb_bitmaps = load_be32(p);
        h.bitmaps.directory_size = load_be64(p + 8);
        h.bitmaps.directory_offset = load_be64(p + 16);
        break;
      default:
        break;  // unknown extensions are ignored by the spec's rule
    }
    off = body + align_up(len, 8);
  }
  return {};  // ran into the end of the area without an end marker: tolerated
}

}  // namespace

Result<Qcow2Header> parse_qcow2_header(std::span<const std::byte> data, uint64_t file_size,
                                       std::string* why) {
  Qcow2Header h;
  if (data.size() < kV2HeaderLength || file_size < kV2HeaderLength)
    return fail(why, Errc::corrupt_image,
                fmt::format("file too small for a qcow2 header ({} bytes)", file_size));
  const std::byte* p = data.data();
  if (load_be32(p) != kMagic)
    return fail(why, Errc::corrupt_image, "not a qcow2 image (bad magic)");
  h.version = load_be32(p + 4);
  if (h.version != 2 && h.version != 3)
    return fail(why, Errc::unsupported_feature,
                fmt::format("qcow2 version {} is not supported (only 2 and 3)", h.version));
  h.backing_file_offset = load_be64(p + 8);
  h.backing_file_size = load_be32(p + 16);
  h.cluster_bits = load_be32(p + 20);
  h.size = load_be64(p + 24);
  h.crypt_method = load_be32(p + 32);
  h.l1_size = load_be32(p + 36);
  h.l1_table_offset = load_be64(p + 40);
  h.refcount_table_offset = load_be64(p + 48);
  h.refcount_table_clusters = load_be32(p + 56);
  h.nb_snapshots = load_be32(p + 60);
  h.snapshots_offset = load_be64(p + 64);
  if (h.version == 2) {
    h.incompatible_features = h.compatible_features = h.autoclear_features = 0;
    h.refcount_order = 4;
    h.header_length = kV2HeaderLength;
  } else {
    if (data.size() < kV3MinHeaderLength)
      return fail(why, Errc::corrupt_image, "file too small for a qcow2 v3 header");
    h.incompatible_features = load_be64(p + 72);
    h.compatible_features = load_be64(p + 80);
    h.autoclear_features = load_be64(p + 88);
    h.refcount_order = load_be32(p + 96);
    h.header_length = load_be32(p + 100);
    if (h.header_length < kV3MinHeaderLength || h.header_length % 8 != 0)
      return fail(why, Errc::corrupt_image,
                  fmt::format("qcow2 header_length {} is invalid (at least 104, multiple of 8)",
                              h.header_length));
  }

  if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits)
    return fail(why, Errc::corrupt_image,
                fmt::format("qcow2 cluster_bits {} is out of range (9..21)", h.cluster_bits));
  const uint64_t cs = h.cluster_size();
  if (h.header_length > cs)
    return fail(why, Errc::corrupt_image,
                fmt::format("qcow2 header_length {} exceeds the cluster size {}", h.header_length,
                            cs));
  if (h.header_length > data.size())
    return fail(why, Errc::corrupt_image,
                fmt::format("qcow2 header_length {} runs past the end of the file", h.header_length));
  if (h.version == 3 && h.header_length > 104) h.compression_type = uint8_t(p[104]);

  // Extensions come first so refusals can name features from the table.
  const uint64_t area_end = std::min<uint64_t>(
      {cs, data.size(),
       h.backing_file_offset > h.header_length ? h.backing_file_offset : uint64_t(cs)});
  if (auto ec = walk_extensions(data, h.header_length, area_end, h, why)) return ec;

  if (h.incompatible_features & kIncompatCorrupt)
    return fail(why, Errc::unsupported_feature,
                "qcow2 image is marked corrupt (incompatible feature 'corrupt'); repair it with "
                "qemu-img check -r all");
  if (h.incompatible_features & kIncompatExternalData)
    return fail(why, Errc::unsupported_feature,
                "qcow2 feature 'external data file' is not supported");
  if (h.incompatible_features & kIncompatCompression)
    return fail(why, Errc::unsupported_feature,
                fmt::format("qcow2 feature 'compression type' (type {}) is not supported",
                            h.compression_type));
  if (h.incompatible_features & kIncompatExtendedL2)
    return fail(why, Errc::unsupported_feature,
                "qcow2 feature 'extended L2 entries' (subclusters) is not supported");
  if (uint64_t unknown = h.incompatible_features & ~uint64_t{0x1f}) {
    std::string names;
    for (unsigned bit = 0; bit < 64; ++bit) {
      if (!(unknown & (uint64_t{1} << bit))) continue;
      std::string n = feature_name(h, 0, bit);
      names += fmt::format("{}bit {}{}", names.empty() ? "" : ", ", bit,
                           n.empty() ? "" : " ('" + n + "')");
    }
    return fail(why, Errc::unsupported_feature,
                fmt::format("qcow2 image uses unknown incompatible features: {}", names));
  }
  if (h.version == 3 && h.compression_type != 0)
    return fail(why, Errc::corrupt_image,
                "qcow2 compression_type is non-zero without the compression type feature bit");
  if (h.crypt_method != 0)
    return fail(why, Errc::unsupported_feature,
                fmt::format("qcow2 encryption (crypt_method {}) is not supported", h.crypt_method));
  if (h.refcount_order > 6)
    return fail(why, Errc::corrupt_image,
                fmt::format("qcow2 refcount_order {} is out of range (0..6)", h.refcount_order));

  // Virtual size and L1.
  if (h.size > (uint64_t{1} << 61))
    return fail(why, Errc::corrupt_image,
                fmt::format("qcow2 virtual size {} is too large", h.size));
  if (uint64_t{h.l1_size} * 8 > kMaxL1Bytes)
    return fail(why, Errc::corrupt_image,
                fmt::format("qcow2 L1 table of {} entries is too large", h.l1_size));
  if (h.l1_size < h.min_l1_size())
    return fail(why, Errc::corrupt_image,
                fmt::format("qcow2 L1 table has {} entries but the virtual size {} needs {}",
                            h.l1_size, h.size, h.min_l1_size()));
  const uint64_t l1_bytes = uint64_t{h.l1_size} * 8;
  if (h.l1_size > 0) {
    if (h.l1_table_offset % cs != 0 || h.l1_table_offset == 0)
      return fail(why, Errc::corrupt_image,
                  fmt::format("qcow2 L1 table offset {} is not a non-zero multiple of the cluster "
                              "size",
                              h.l1_table_offset));
    if (h.l1_table_offset > file_size || l1_bytes > file_size - h.l1_table_offset)
      return fail(why, Errc::corrupt_image,
                  fmt::format("qcow2 L1 table ({} bytes at {}) lies beyond the end of the file "
                              "({} bytes)",
                              l1_bytes, h.l1_table_offset, file_size));
  }

  // Refcount table.
  const uint64_t rt_bytes = uint64_t{h.refcount_table_clusters} * cs;
  if (h.refcount_table_clusters == 0 || rt_bytes > kMaxRefcountTableBytes)
    return fail(why, Errc::corrupt_image,
                fmt::format("qcow2 refcount table of {} clusters is invalid",
                            h.refcount_table_clusters));
  if (h.refcount_table_offset % cs != 0 || h.refcount_table_offset == 0)
    return fail(why, Errc::corrupt_image,
                fmt::format("qcow2 refcount table offset {} is not a non-zero multiple of the "
                            "cluster size",
                            h.refcount_table_offset));
  if (h.refcount_table_offset > file_size || rt_bytes > file_size - h.refcount_table_offset)
    return fail(why, Errc::corrupt_image,
                fmt::format("qcow2 refcount table ({} bytes at {}) lies beyond the end of the "
                            "file ({} bytes)",
                            rt_bytes, h.refcount_table_offset, file_size));
  if (h.l1_size > 0 &&
      overlaps(h.l1_table_offset, align_up(l1_bytes, cs), h.refcount_table_offset, rt_bytes))
    return fail(why, Errc::corrupt_image, "qcow2 L1 table and refcount table overlap");

  if (h.nb_snapshots > 0) {
    if (h.snapshots_offset % cs != 0 || h.snapshots_offset == 0 ||
        h.snapshots_offset >= file_size)
      return fail(why, Errc::corrupt_image,
                  fmt::format("qcow2 snapshot table offset {} is invalid", h.snapshots_offset));
  }

  // Backing file name: inside the first cluster, after the header.
  if (h.backing_file_offset != 0) {
    if (h.backing_file_size > kMaxBackingFileName)
      return fail(why, Errc::corrupt_image,
                  fmt::format("qcow2 backing file name is {} bytes long (at most 1023)",
                              h.backing_file_size));
    if (h.backing_file_offset < h.header_length || h.backing_file_offset > cs ||
        h.backing_file_size > cs - h.backing_file_offset)
      return fail(why, Errc::corrupt_image,
                  fmt::format("qcow2 backing file name ({} bytes at {}) is outside the first "
                              "cluster",
                              h.backing_file_size, h.backing_file_offset));
    if (h.backing_file_offset + h.backing_file_size > data.size())
      return fail(why, Errc::corrupt_image,
                  "qcow2 backing file name runs past the end of the file");
    h.backing_file.assign(reinterpret_cast<const char*>(p + h.backing_file_offset),
                          h.backing_file_size);
  } else if (h.backing_file_size != 0) {
    return fail(why, Errc::corrupt_image, "qcow2 backing file size set without an offset");
  }
  return h;
}

void update_qcow2_header_fields(const Qcow2Header& h, std::span<std::byte> c0) {
  std::byte* p = c0.data();
  store_be32(p + 0, kMagic);
  store_be32(p + 4, h.version);
  store_be64(p + 8, h.backing_file_offset);
  store_be32(p + 16, h.backing_file_size);
  store_be32(p + 20, h.cluster_bits);
  store_be64(p + 24, h.size);
  store_be32(p + 32, h.crypt_method);
  store_be32(p + 36, h.l1_size);
  store_be64(p + 40, h.l1_table_offset);
  store_be64(p + 48, h.refcount_table_offset);
  store_be32(p + 56, h.refcount_table_clusters);
  store_be32(p + 60, h.nb_snapshots);
  store_be64(p + 64, h.snapshots_offset);
  if (h.version >= 3) {
    store_be64(p + 72, h.incompatible_features);
    store_be64(p + 80, h.compatible_features);
    store_be64(p + 88, h.autoclear_features);
    store_be32(p + 96, h.refcount_order);
    store_be32(p + 100, h.header_length);
  }
}

std::error_code encode_qcow2_header(Qcow2Header& h, std::span<std::byte> c0) {
  if (c0.size() != h.cluster_size() || h.version != 3 || h.header_length < kV3MinHeaderLength ||
      h.header_length % 8 != 0 || h.backing_file.size() > kMaxBackingFileName)
    return std::make_error_code(std::errc::invalid_argument);
  std::memset(c0.data(), 0, c0.size());
  uint64_t off = h.header_length;
  auto put_ext = [&](uint32_t type, const void* body, uint32_t len) -> bool {
    if (off + 8 + align_up(len, 8) > c0.size()) return false;
    store_be32(c0.data() + off, type);
    store_be32(c0.data() + off + 4, len);
    if (len) std::memcpy(c0.data() + off + 8, body, len);
    off += 8 + align_up(len, 8);
    return true;
  };
  if (!h.backing_format.empty() &&
      !put_ext(kExtBackingFormat, h.backing_format.data(), uint32_t(h.backing_format.size())))
    return std::make_error_code(std::errc::invalid_argument);
  if (!put_ext(kExtEnd, nullptr, 0)) return std::make_error_code(std::errc::invalid_argument);
  if (!h.backing_file.empty()) {
    if (off + h.backing_file.size() > c0.size())
      return std::make_error_code(std::errc::invalid_argument);
    std::memcpy(c0.data() + off, h.backing_file.data(), h.backing_file.size());
    h.backing_file_offset = off;
    h.backing_file_size = uint32_t(h.backing_file.size());
  } else {
    h.backing_file_offset = 0;
    h.backing_file_size = 0;
  }
  update_qcow2_header_fields(h, c0);
  if (h.header_length > 104) c0[104] = std::byte(h.compression_type);
  return {};
}

namespace {

enum class BitmapsExt { keep, set, remove };

// Rebuilds the extension area and backing file name of an encoded first
// cluster: the backing format and (unless kept) the bitmaps extension are
// replaced, every other extension is kept byte for byte.
std::error_code rebuild_extension_area(Qcow2Header& h, std::span<std::byte> c0,
                                       const std::string& backing_file,
                                       const std::string& backing_format, BitmapsExt bitmaps,
                                       const Qcow2BitmapsExtension& ext) {
  if (backing_file.size() > kMaxBackingFileName || backing_format.size() > 255 ||
      (backing_file.empty() && !backing_format.empty()))
    return std::make_error_code(std::errc::invalid_argument);
  // The extensions to keep, as raw (type, body) pairs.
  std::vector<std::pair<uint32_t, std::vector<std::byte>>> keep;
  const uint64_t area_end =
      h.backing_file_offset > h.header_length ? h.backing_file_offset : c0.size();
  for (uint64_t off = h.header_length; off + 8 <= area_end;) {
    const uint32_t type = load_be32(c0.data() + off);
    const uint32_t len = load_be32(c0.data() + off + 4);
    if (type == kExtEnd || len > area_end - off - 8) break;
    if (type != kExtBackingFormat && (type != kExtBitmaps || bitmaps == BitmapsExt::keep))
      keep.emplace_back(type, std::vector<std::byte>(c0.begin() + off + 8,
                                                     c0.begin() + off + 8 + len));
    off += 8 + align_up(len, 8);
  }
  std::vector<std::byte> area;
  auto put = [&](uint32_t type, const std::byte* body, uint32_t len) {
    const std::size_t at = area.size();
    area.resize(at + 8 + align_up(len, 8));
    store_be32(area.data() + at, type);
    store_be32(area.data() + at + 4, len);
    if (len) std::memcpy(area.data() + at + 8, body, len);
  };
  if (!backing_format.empty())
    put(kExtBackingFormat, reinterpret_cast<const std::byte*>(backing_format.data()),
        uint32_t(backing_format.size()));
  if (bitmaps == BitmapsExt::set) {
    std::byte body[24] = {};
    store_be32(body, ext.nb_bitmaps);
    store_be64(body + 8, ext.directory_size);
    store_be64(body + 16, ext.directory_offset);
    put(kExtBitmaps, body, sizeof body);
  }
  for (auto& [type, body] : keep) put(type, body.data(), uint32_t(body.size()));
  put(kExtEnd, nullptr, 0);
  if (h.header_length + area.size() + backing_file.size() > c0.size())
    return std::make_error_code(std::errc::invalid_argument);
  std::memset(c0.data() + h.header_length, 0, c0.size() - h.header_length);
  std::memcpy(c0.data() + h.header_length, area.data(), area.size());
  h.backing_file = backing_file;
  h.backing_format = backing_format;
  if (backing_file.empty()) {
    h.backing_file_offset = 0;
    h.backing_file_size = 0;
  } else {
    h.backing_file_offset = h.header_length + area.size();
    h.backing_file_size = uint32_t(backing_file.size());
    std::memcpy(c0.data() + h.backing_file_offset, backing_file.data(), backing_file.size());
  }
  if (bitmaps != BitmapsExt::keep) {
    h.has_bitmaps_extension = bitmaps == BitmapsExt::set;
    h.bitmaps = bitmaps == BitmapsExt::set ? ext : Qcow2BitmapsExtension{};
    h.bitmaps_extension_error.clear();
    if (bitmaps == BitmapsExt::set)
      h.autoclear_features |= kAutoclearBitmaps;
    else
      h.autoclear_features &= ~kAutoclearBitmaps;
  }
  update_qcow2_header_fields(h, c0);
  return {};
}

}  // namespace

std::error_code rewrite_qcow2_backing(Qcow2Header& h, std::span<std::byte> c0,
                                      const std::string& backing_file,
                                      const std::string& backing_format) {
  return rebuild_extension_area(h, c0, backing_file, backing_format, BitmapsExt::keep, {});
}

std::error_code rewrite_qcow2_bitmaps_extension(Qcow2Header& h, std::span<std::byte> c0,
                                                const std::optional<Qcow2BitmapsExtension>& ext) {
  if (h.version < 3) return std::make_error_code(std::errc::invalid_argument);
  const std::string file = h.backing_file, format = h.backing_format;
  return rebuild_extension_area(h, c0, file, format, ext ? BitmapsExt::set : BitmapsExt::remove,
                                ext.value_or(Qcow2BitmapsExtension{}));
}

}  // namespace fleece::cow
