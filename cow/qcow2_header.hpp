// Qcow2Header: the qcow2 header and its extensions, parsed and validated.
//
// parse_qcow2_header() treats the file as hostile: every field is checked
// against the spec and against the file size before anything trusts it, and
// a refusal says which field or feature was wrong (in *why). It reads only
// the bytes it is given (the first cluster, or what exists of it).
//
// Errors: fleece::Errc::corrupt_image for malformed headers,
// fleece::Errc::unsupported_feature for valid images using a feature fleece
// does not implement (encryption, external data file, non-zlib compression
// type, extended L2 entries, unknown incompatible bits, a corrupt-marked
// image). Extended L2 entries are written by fleece (its stores) but not
// opened.
//
// encode_qcow2_header() writes a header made by fleece: version 3 header,
// backing-format extension, end marker, backing file name, into a zeroed
// first cluster. It sets h.backing_file_offset/size to where the name went.
#pragma once

#include "util/result.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace fleece::cow {

struct Qcow2FeatureName {
  uint8_t type = 0;  // 0 incompatible, 1 compatible, 2 autoclear
  uint8_t bit = 0;
  std::string name;
};

// The bitmaps extension's fields (qcow2.txt "Bitmaps extension").
struct Qcow2BitmapsExtension {
  uint32_t nb_bitmaps = 0;
  uint64_t directory_size = 0;    // bytes
  uint64_t directory_offset = 0;  // cluster aligned
};

struct Qcow2Header {
  uint32_t version = 3;
  uint64_t backing_file_offset = 0;
  uint32_t backing_file_size = 0;
  uint32_t cluster_bits = 16;
  uint64_t size = 0;  // virtual size in bytes
  uint32_t crypt_method = 0;
  uint32_t l1_size = 0;  // entries
  uint64_t l1_table_offset = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t snapshots_offset = 0;
  uint64_t incompatible_features = 0;
  uint64_t compatible_features = 0;
  uint64_t autoclear_features = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = 112;
  uint8_t compression_type = 0;

  // From the header extensions and the backing file name area.
  std::string backing_file;
  std::string backing_format;
  std::vector<Qcow2FeatureName> feature_names;
  bool has_bitmaps_extension = false;
  // Its fields when it has the spec's length (24 bytes) and reserved bytes
  // zero; otherwise bitmaps_extension_error says what is wrong with it (the
  // image itself still opens: only its bitmaps are unusable).
  Qcow2BitmapsExtension bitmaps;
  std::string bitmaps_extension_error;

  uint64_t cluster_size() const { return uint64_t{1} << cluster_bits; }
  // Extended L2 entries (incompatible bit 4): 128-bit L2 entries whose
  // second half maps 32 subclusters of the cluster one by one.
  bool extended_l2() const;
  uint64_t l2_entry_bytes() const { return extended_l2() ? 16 : 8; }
  uint64_t l2_entries() const { return cluster_size() / l2_entry_bytes(); }
  uint64_t subcluster_size() const { return extended_l2() ? cluster_size() / 32 : cluster_size(); }
  // Guest clusters the virtual size spans, and the L1 entries that needs.
  uint64_t guest_clusters() const { return (size + cluster_size() - 1) >> cluster_bits; }
  uint64_t min_l1_size() const { return (guest_clusters() + l2_entries() - 1) / l2_entries(); }
  bool dirty() const;
};

// `data` is the start of the file (ideally the whole first cluster; parsing
// fails with a clear error if a field points beyond what was given).
Result<Qcow2Header> parse_qcow2_header(std::span<const std::byte> data, uint64_t file_size,
                                       std::string* why);

// Fills `cluster0` (cluster_size bytes) with the header, extensions and
// backing file name. Fails with std::errc::invalid_argument when they do not
// fit in one cluster.
std::error_code encode_qcow2_header(Qcow2Header& h, std::span<std::byte> cluster0);

// Replaces the backing file name and format in an encoded first cluster,
// keeping every other header extension (unknown ones byte for byte). Sets
// h.backing_file/format/offset/size. Fails with std::errc::invalid_argument
// (and changes nothing) when the result does not fit in the cluster.
std::error_code rewrite_qcow2_backing(Qcow2Header& h, std::span<std::byte> cluster0,
                                      const std::string& backing_file,
                                      const std::string& backing_format);

// Sets (ext given) or removes (std::nullopt) the bitmaps extension in an
// encoded first cluster, keeping every other extension and the backing file
// name, and sets or clears autoclear bit 0 to match. Fails with
// std::errc::invalid_argument (and changes nothing) when it does not fit.
std::error_code rewrite_qcow2_bitmaps_extension(Qcow2Header& h, std::span<std::byte> cluster0,
                                                const std::optional<Qcow2BitmapsExtension>& ext);

// Rewrites only the fixed fields fleece changes after creation (refcount
// table location, feature bits) in an encoded header.
void update_qcow2_header_fields(const Qcow2Header& h, std::span<std::byte> cluster0);

}  // namespace fleece::cow
