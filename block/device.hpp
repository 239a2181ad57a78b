// Device: the one interface every layer of fleece sees disks through.
//
// A raw file, a qcow2 image, the copy-before-write filter and a frozen view
// are all Devices; an NBD export is a name bound to a Device. Filters are
// built by composition: a filter is a Device that holds the Device below it.
//
// Contract
//  * Every operation is a coroutine on the caller's executor and completes
//    there. Operations may be called concurrently, from any thread, on the
//    same Device; a Device does its own locking.
//  * Ranges are checked by the caller (the NBD layer validates against size()
//    and the block sizes of capabilities()); a Device may still refuse a bad
//    range with std::errc::invalid_argument.
//  * Errors are std::error_code: std::errc values for the usual errno cases,
//    fleece::Errc (util/errors.hpp) for fleece's own conditions.
//  * A write whose completion reported success is visible to every later
//    read on every connection. flush() makes every write completed before it
//    durable; WriteFlags::fua makes that one write durable before it completes.
//  * read() fills exactly out.size() bytes (short reads are the Device's
//    problem, not the caller's). Buffers passed to a Device whose
//    capabilities().min_block > 1 must be aligned to min_block (O_DIRECT).
#pragma once

#include <boost/asio/awaitable.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>
#include <memory>
#include <optional>
#include <vector>

namespace fleece::block {

template <class T>
using Task = boost::asio::awaitable<T>;

// One run of equal block status, as in NBD's base:allocation context.
struct Extent {
  uint64_t length = 0;
  uint32_t flags = 0;  // kExtentHole | kExtentZero
  // Backing-chain depth that provides the data (qemu:allocation-depth):
  // 0 = unallocated anywhere, 1 = this image, 2 = its backing file, ...
  uint32_t depth = 1;
};
inline constexpr uint32_t kExtentHole = 1u << 0;  // no storage allocated
inline constexpr uint32_t kExtentZero = 1u << 1;  // reads as zeroes

struct Capabilities {
  bool read_only = false;
  bool can_flush = true;
  bool can_fua = true;
  bool can_trim = false;
  bool can_zero = true;       // write_zeroes is always callable; this says it is efficient
  bool can_fast_zero = false; // write_zeroes with fast_only can succeed
  bool can_cache = false;     // cache() does something useful
  bool rotational = false;
  uint32_t min_block = 1;          // alignment every request must honour
  uint32_t preferred_block = 4096; // the alignment that avoids read-modify-write
  uint32_t max_block = 32u << 20;  // largest single read/write payload
};

struct WriteFlags {
  bool fua = false;  // durable before completion
};

struct ZeroFlags {
  bool fua = false;
  bool may_trim = false;   // the range may become a hole (NBD: no NO_HOLE flag)
  bool fast_only = false;  // fail with std::errc::operation_not_supported unless fast
};

// Where a device's bytes sit unchanged in a file's page cache, for servers
// that hand them to the kernel (sendfile) instead of read() then send().
// keep holds the file open while the range is in use.
struct FileRange {
  int fd = -1;
  uint64_t offset = 0;
  std::shared_ptr<const void> keep;
};

class Device {
 public:
  virtual ~Device() = default;

  virtual uint64_t size() const = 0;
  virtual Capabilities capabilities() const = 0;

  virtual Task<std::error_code> read(uint64_t offset, std::span<std::byte> out) = 0;
  virtual Task<std::error_code> write(uint64_t offset, std::span<const std::byte> data,
                                      WriteFlags flags) = 0;
  virtual Task<std::error_code> write_zeroes(uint64_t offset, uint64_t length,
                                             ZeroFlags flags) = 0;
  // Discard: afterwards the range reads as zeroes or as its old content;
  // for a frozen view, a later read fails (see snapshot/).
  virtual Task<std::error_code> trim(uint64_t offset, uint64_t length, WriteFlags flags) = 0;
  virtual Task<std::error_code> flush() = 0;
  // Prefetch hint (NBD_CMD_CACHE). The default does nothing and succeeds.
  virtual Task<std::error_code> cache(uint64_t offset, uint64_t length);
  // Appends extents covering at least one byte from offset, consecutive,
  // each of non-zero length; they may stop before offset + length and the
  // last may run past it (callers clamp).
  virtual Task<std::error_code> block_status(uint64_t offset, uint64_t length,
                                             std::vector<Extent>& out) = 0;
  // Where [offset, offset + length) lives in one file exactly as read()
  // would return it now, with every page resident; std::nullopt (the
  // default) otherwise: O_DIRECT, image formats, filters that change bytes.
  // The bytes are those of the moment they are sent: a later write may
  // change them, so a caller that must return an older state (a frozen
  // view) never uses this. Holding locks until sendfile returns is not
  // enough: a socket may keep the page itself (zero copy, AF_UNIX since
  // Linux 6.5, TCP until acknowledged), so the bytes leave when the peer
  // reads them.
  virtual std::optional<FileRange> file_range(uint64_t offset, uint64_t length) const;
};

}  // namespace fleece::block
