// BackingChain: a disk image opened with its whole backing chain.
//
//   std::string why;
//   auto chain = co_await BackingChain::open("vm/newcow.qcow2", "qcow2", {}, &why);
//   export_device(chain.value()->device());   // what the guest reads and writes
//
// Opening: the top image is opened with the given format ("raw", "qcow2", or
// "" to probe). A qcow2 image's backing file name is resolved against the
// directory of the image that names it (an absolute name is used as is) and
// opened with the recorded backing format, or probed when none is recorded
// (qcow2 magic, else raw); recursively, to any depth up to max_depth. A loop
// (the same file twice, by device and inode), a missing file, an unknown
// format or a chain deeper than max_depth fails with a message naming the
// file. Every layer is opened read-only except the top (unless
// options.read_only), and each qcow2 layer is set_backing() onto the next.
//
// Layers are listed top (the active layer, index 0) to base. A layer is
// known by its path: the top's as given, the others' as resolved (the
// directory of the image above joined with the recorded name). Paths are
// unique in a chain.
//
// device() is a Device that stays the same for the chain's life and forwards
// to whatever the active layer is now, so an export or a filter built on it
// follows live snapshots without being rebuilt. Depth in block_status (and
// depth_of) counts from the active layer: 1 = active, 2 = the layer below,
// ..., 0 = unallocated in every layer (a raw layer is allocated everywhere).
//
// Changing the chain (snapshot/chain_snapshot.hpp, snapshot/commit_job.hpp)
// goes through the mutators at the bottom. They are synchronous and take
// effect at once for new requests; requests in flight finish on the devices
// they started with (shared ownership keeps them open).
//
// Threading: every method may be called from any thread; a std::mutex
// guards the layer list and is never held across an await.
#pragma once

#include "block/device.hpp"
#include "cow/qcow2_image.hpp"
#include "util/result.hpp"

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fleece::cow {

class ChainDevice;

struct ChainOpenOptions {
  bool read_only = false;       // the top too
  bool direct = false;          // cache=none on every layer
  std::size_t max_depth = 256;  // layers, top included
  // The top qcow2 image keeps its bitmaps extension valid on a writable
  // open (Qcow2OpenOptions::keep_bitmaps): the caller then opens a
  // Qcow2BitmapStore on layers().front().qcow2 before anything writes.
  bool keep_bitmaps = false;
  // Each qcow2 layer's L2 cache (Qcow2OpenOptions::l2_cache_bytes); 0: the
  // default (32 GiB of virtual disk covered).
  uint64_t l2_cache_bytes = 0;
};

struct ChainLayer {
  std::string path;            // identity in the chain
  std::string format;          // "raw" | "qcow2"
  std::string backing_name;    // backing file name recorded in the header ("" = none)
  std::string backing_format;  // recorded backing format ("" = none)
  bool read_only = true;
  std::shared_ptr<block::Device> device;
  std::shared_ptr<Qcow2Image> qcow2;  // the same object as device for qcow2 layers
};

// One image of the chain for query-block, nested like QEMU's
// `inserted.image` with `backing-image`.
struct ChainImageInfo {
  std::string filename;
  std::string format;
  uint64_t virtual_size = 0;
  uint64_t actual_size = 0;    // bytes allocated on the host file system
  uint32_t cluster_size = 0;   // qcow2 only, else 0
  bool read_only = true;
  std::string backing_filename;         // as recorded ("" = none)
  std::string full_backing_filename;    // the path it resolved to
  std::string backing_filename_format;  // as recorded
  std::shared_ptr<const ChainImageInfo> backing_image;  // null at the base
};

// An image file opened as a Device: raw, or qcow2 over a raw file (its
// backing is not set). On failure *why names the file and the problem.
struct OpenedImage {
  std::shared_ptr<block::Device> device;
  std::shared_ptr<Qcow2Image> qcow2;
};
block::Task<Result<OpenedImage>> open_image(std::string path, std::string format, bool read_only,
                                            bool direct, std::string* why,
                                            bool keep_bitmaps = false,
                                            uint64_t l2_cache_bytes = 0);

// "qcow2" when the file starts with the qcow2 magic, else "raw".
Result<std::string> probe_image_format(const std::string& path, std::string* why);

// The name to record in `overlay`'s header for a backing file at `backing`:
// the bare file name when both are in the same directory, else the absolute
// path.
std::string backing_name_for(const std::string& overlay, const std::string& backing);

class BackingChain : public std::enable_shared_from_this<BackingChain> {
 public:
  static block::Task<Result<std::shared_ptr<BackingChain>>> open(std::string path,
                                                                 std::string format,
                                                                 ChainOpenOptions options = {},
                                                                 std::string* why = nullptr);
  ~BackingChain();

  // The guest's Device: forwards to the current active layer.
  std::shared_ptr<block::Device> device() const;
  // The active layer's own Device at this moment.
  std::shared_ptr<block::Device> active() const;
  std::vector<ChainLayer> layers() const;  // active first
  std::size_t length() const;
  const ChainOpenOptions& options() const { return options_; }

  // Index of the layer called `name` now: its path, the same file by another
  // spelling (compared as absolute lexically normal paths), or the backing
  // name recorded in the layer above.
  std::optional<std::size_t> find(std::string_view name) const;
  std::optional<std::size_t> index_of_path(std::string_view path) const;

  // qemu:allocation-depth of the byte at offset (see above).
  block::Task<Result<uint32_t>> depth_of(uint64_t offset);

  ChainImageInfo describe() const;

  // --- mutators ------------------------------------------------------------
  // Installs `device` as the layer at `path`: a qcow2 one is backed by the
  // layer below, and the layer above (or device() for the active layer)
  // reads from it. Returns false if the path is no longer in the chain.
  bool replace_device(std::string_view path, OpenedImage image, bool read_only);
  // A new active layer on top; its backing must already be the old one.
  // Call with guest writes drained.
  void push_active(ChainLayer layer);
  // Removes the layers strictly between `above` and `base`, records the new
  // link in `above`'s entry and set_backing()s it onto base. The removed
  // layers' devices close once nothing in flight holds them.
  std::error_code drop_between(std::string_view above, std::string_view base,
                               std::string recorded_name, std::string recorded_format);

  // One block job per chain: claim before starting, release when it ends.
  // claim_job() returns the current owner's id when already claimed.
  std::optional<std::string> claim_job(std::string job_id);
  void release_job(std::string_view job_id);
  std::optional<std::string> job() const;

 private:
  BackingChain(std::vector<ChainLayer> layers, ChainOpenOptions options);

  mutable std::mutex mu_;
  std::vector<ChainLayer> layers_;
  std::shared_ptr<ChainDevice> device_;
  std::optional<std::string> job_;
  ChainOpenOptions options_;
};

}  // namespace fleece::cow
