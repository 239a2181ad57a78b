// The qcow2 bitmap directory: parsing and encoding its entries, no I/O.
//
// Layout: qcow2.txt "Bitmap directory" (entry: bitmap_table_offset(8)
// bitmap_table_size(4) flags(4) type(1) granularity_bits(1) name_size(2)
// extra_data_size(4) extra_data name, padded to a multiple of 8) and
// "Bitmap table" (entry: bit 0 all-ones when unallocated, bits 9-55 the
// host cluster, bits 1-8 and 56-63 reserved).
//
// parse_qcow2_bitmap_directory() treats the bytes as hostile: every field
// is checked against the spec, QEMU's limits (granularity 2^9..2^31, names
// up to 1023 bytes, at most 65535 bitmaps) and the image's geometry (table
// size matching the virtual size), and a refusal says which bitmap and field
// were wrong (in *why). Errors: fleece::Errc::corrupt_image, or
// fleece::Errc::unsupported_feature for extra data (defined by no spec
// version yet, so fleece cannot keep it as the spec asks).
#pragma once

#include "util/result.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace fleece::cow::qcow2 {

inline constexpr uint32_t kBitmapInUse = 1u << 0;
inline constexpr uint32_t kBitmapAuto = 1u << 1;
inline constexpr uint32_t kBitmapExtraDataCompatible = 1u << 2;
inline constexpr uint32_t kBitmapKnownFlags = 0x7;
inline constexpr uint8_t kBitmapTypeDirty = 1;
inline constexpr uint32_t kMaxBitmaps = 65535;
inline constexpr uint64_t kMaxBitmapDirectoryBytes = 64ull << 20;  // QEMU's limit
inline constexpr uint32_t kMinBitmapGranularityBits = 9;
inline constexpr uint32_t kMaxBitmapGranularityBits = 31;
inline constexpr uint64_t kBitmapTableAllOnes = 1;
inline constexpr uint64_t kBitmapTableReserved = 0xff000000000001feull;  // bits 1-8, 56-63

}  // namespace fleece::cow::qcow2

namespace fleece::cow {

struct Qcow2BitmapEntry {
  uint64_t table_offset = 0;
  uint32_t table_size = 0;  // entries
  uint32_t flags = 0;
  uint32_t granularity_bits = 16;
  std::string name;
  uint64_t granularity() const { return uint64_t{1} << granularity_bits; }
};

// Entries of bitmap_table_size a bitmap of this virtual size and
// granularity needs: one per cluster of bitmap data.
uint64_t qcow2_bitmap_table_entries(uint64_t virtual_size, uint32_t granularity_bits,
                                    uint32_t cluster_bits);

Result<std::vector<Qcow2BitmapEntry>> parse_qcow2_bitmap_directory(
    std::span<const std::byte> dir, uint32_t nb_bitmaps, uint64_t virtual_size,
    uint32_t cluster_bits, std::string* why);

// Encoded entries, padded each to a multiple of 8.
std::vector<std::byte> encode_qcow2_bitmap_directory(std::span<const Qcow2BitmapEntry> entries);

}  // namespace fleece::cow
