// qcow2 on-disk constants and big-endian field access.
//
// The layout is QEMU's docs/interop/qcow2.txt. Everything on disk is
// big-endian; these helpers read and write fields in place in a byte buffer
// so that cached tables can be written back to the file unchanged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace fleece::cow::qcow2 {

inline constexpr uint32_t kMagic = 0x514649fb;  // "QFI\xfb"
inline constexpr uint32_t kV2HeaderLength = 72;
inline constexpr uint32_t kV3MinHeaderLength = 104;
inline constexpr uint32_t kV3HeaderLength = 112;  // with compression_type and padding
inline constexpr uint32_t kMinClusterBits = 9;
inline constexpr uint32_t kMaxClusterBits = 21;
inline constexpr uint32_t kMaxBackingFileName = 1023;
// QEMU's limits: larger tables are refused as hostile, not merely big.
inline constexpr uint64_t kMaxL1Bytes = 32ull << 20;
inline constexpr uint64_t kMaxRefcountTableBytes = 8ull << 20;

// Incompatible feature bits.
inline constexpr uint64_t kIncompatDirty = 1ull << 0;
inline constexpr uint64_t kIncompatCorrupt = 1ull << 1;
inline constexpr uint64_t kIncompatExternalData = 1ull << 2;
inline constexpr uint64_t kIncompatCompression = 1ull << 3;
inline constexpr uint64_t kIncompatExtendedL2 = 1ull << 4;
// Compatible feature bits.
inline constexpr uint64_t kCompatLazyRefcounts = 1ull << 0;

// Autoclear feature bits.
inline constexpr uint64_t kAutoclearBitmaps = 1ull << 0;

// Header extension types.
inline constexpr uint32_t kExtEnd = 0x00000000;
inline constexpr uint32_t kExtBackingFormat = 0xe2792aca;
inline constexpr uint32_t kExtFeatureTable = 0x6803f857;
inline constexpr uint32_t kExtBitmaps = 0x23852875;
inline constexpr uint32_t kExtEncryption = 0x0537be77;
inline constexpr uint32_t kExtDataFile = 0x44415441;

// L1 / L2 / refcount-table entries.
inline constexpr uint64_t kEntryOffsetMask = 0x00fffffffffffe00ull;  // bits 9..55
inline constexpr uint64_t kEntryCopied = 1ull << 63;      // refcount is exactly 1
inline constexpr uint64_t kL2Compressed = 1ull << 62;
inline constexpr uint64_t kL2Zero = 1ull << 0;            // v3 only
inline constexpr uint64_t kRefTableOffsetMask = ~0x1ffull;  // bits 9..63

inline uint16_t load_be16(const std::byte* p) {
  return static_cast<uint16_t>((uint16_t(p[0]) << 8) | uint16_t(p[1]));
}
inline uint32_t load_be32(const std::byte* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}
inline uint64_t load_be64(const std::byte* p) {
  return (uint64_t(load_be32(p)) << 32) | load_be32(p + 4);
}
inline void store_be16(std::byte* p, uint16_t v) {
  p[0] = std::byte(v >> 8);
  p[1] = std::byte(v);
}
inline void store_be32(std::byte* p, uint32_t v) {
  p[0] = std::byte(v >> 24);
  p[1] = std::byte(v >> 16);
  p[2] = std::byte(v >> 8);
  p[3] = std::byte(v);
}
inline void store_be64(std::byte* p, uint64_t v) {
  store_be32(p, uint32_t(v >> 32));
  store_be32(p + 4, uint32_t(v));
}

inline constexpr uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
inline constexpr uint64_t align_down(uint64_t v, uint64_t a) { return v / a * a; }
inline constexpr uint64_t div_up(uint64_t v, uint64_t d) { return (v + d - 1) / d; }

}  // namespace fleece::cow::qcow2
