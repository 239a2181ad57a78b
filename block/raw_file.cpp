#include "block/raw_file.hpp"

#include "block/buffer.hpp"
#include "block/io_engine.hpp"
#include "block/page_cache.hpp"
#include "block/unique_fd.hpp"
#include "util/log.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <utility>

namespace fleece::block {

namespace {

constexpr uint32_t kDirectAlign = 4096;
constexpr std::size_t kMaxExtentsPerCall = 1024;

std::error_code errno_code(int e) { return {e, std::generic_category()}; }

bool unsupported(const std::error_code& ec) {
  return ec == std::errc::operation_not_supported || ec == std::errc::function_not_supported;
}

// Reads a number from a sysfs queue attribute of block device dev, looking
// at the device itself and then at its parent (partitions have no queue/).
std::optional<uint64_t> block_queue_attribute(dev_t dev, const char* name) {
  for (const char* dir : {"", "/.."}) {
    std::ifstream in(fmt::format("/sys/dev/block/{}:{}{}/queue/{}", major(dev), minor(dev), dir, name));
    uint64_t value;
    if (in >> value) return value;
  }
  return std::nullopt;
}

// A shared block of zeroes for write_zeroes on filesystems that cannot
// allocate zeroes; aligned, so it also serves O_DIRECT files.
std::span<const std::byte> zero_block() {
  static const AlignedBuffer zeroes = AlignedBuffer::zeroed(1u << 20);
  return zeroes.span();
}

class RawFile final : public Device, public std::enable_shared_from_this<RawFile> {
 public:
  struct Setup {
    UniqueFd fd;
    bool block_device = false;
    bool direct = false;
    bool read_only = false;
    bool rotational = false;
    bool punch_ok = false;
    bool discard_ok = false;
    uint64_t size = 0;
  };

  explicit RawFile(Setup s)
      : fd_(std::move(s.fd)),
        block_device_(s.block_device),
        direct_(s.direct),
        read_only_(s.read_only),
        rotational_(s.rotational),
        discard_ok_(s.discard_ok),
        size_(s.size),
        punch_ok_(s.punch_ok),
        zero_range_ok_(!s.block_device) {}

  uint64_t size() const override { return size_.load(std::memory_order_relaxed); }

  Capabilities capabilities() const override {
    Capabilities c;
    c.read_only = read_only_;
    c.can_flush = true;
    c.can_fua = true;
    c.can_trim = !read_only_ && (block_device_ ? discard_ok_ : punch_ok_.load());
    c.can_zero = true;
    c.can_fast_zero = !read_only_ && !block_device_ && (punch_ok_.load() || zero_range_ok_.load());
    c.can_cache = true;
    c.rotational = rotational_;
    c.min_block = direct_ ? kDirectAlign : 1;
    c.preferred_block = 4096;
    c.max_block = 32u << 20;
    return c;
  }

  Task<std::error_code> read(uint64_t offset, std::span<std::byte> out) override {
    const int fd = fd_.get();
    std::size_t done = 0;
    while (done < out.size()) {
      auto rest = out.subspan(done);
      auto r = direct_ ? co_await io::pread(fd, rest, offset + done)
                       : co_await io::pread_cached(fd, rest, offset + done);
      if (!r) {
        if (r.error() == std::errc::interrupted) continue;
        co_return r.error();
      }
      done += *r;
      // End of file: the rest reads as zeroes. With O_DIRECT a short read
      // that stops off the alignment can only be the end of the file (and a
      // retry there would fail with EINVAL).
      if (*r == 0 || (direct_ && *r < rest.size() && (offset + done) % kDirectAlign != 0)) {
        std::memset(out.data() + done, 0, out.size() - done);
        break;
      }
    }
    co_return std::error_code{};
  }

  Task<std::error_code> write(uint64_t offset, std::span<const std::byte> data,
                              WriteFlags flags) override {
    if (read_only_) co_return std::make_error_code(std::errc::read_only_file_system);
    const int rw_flags = flags.fua ? RWF_DSYNC : 0;
    auto ec = direct_ ? co_await io::write_all(fd_.get(), data, offset, rw_flags)
                      : co_await io::write_all_cached(fd_.get(), data, offset, rw_flags, write_state_);
    if (!ec) grew_to(offset + data.size());
    co_return ec;
  }

  Task<std::error_code> write_zeroes(uint64_t offset, uint64_t length, ZeroFlags flags) override {
    if (read_only_) co_return std::make_error_code(std::errc::read_only_file_system);
    if (length == 0) co_return std::error_code{};
    forget_data();  // before and after: a block-status walk may overlap
    auto ec = co_await zero_range(offset, length, flags);
    forget_data();
    if (!ec && flags.fua) ec = co_await io::fdatasync(fd_.get());
    co_return ec;
  }

  Task<std::error_code> trim(uint64_t offset, uint64_t length, WriteFlags flags) override {
    if (read_only_) co_return std::make_error_code(std::errc::read_only_file_system);
    std::error_code ec;
    forget_data();  // before and after: a block-status walk may overlap
    if (block_device_) {
      ec = co_await discard(offset, length);
    } else if (punch_ok_ && length > 0) {
      ec = co_await io::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
                                  length);
      if (unsupported(ec)) {  // trim is advisory: not doing it is allowed
        punch_ok_ = false;
        ec.clear();
      }
    }
    forget_data();
    if (!ec && flags.fua) ec = co_await io::fdatasync(fd_.get());
    co_return ec;
  }

  Task<std::error_code> flush() override {
    if (read_only_) co_return std::error_code{};
    co_return co_await io::fdatasync(fd_.get());
  }

  Task<std::error_code> cache(uint64_t offset, uint64_t length) override {
    co_return co_await io::fadvise(fd_.get(), offset, length, POSIX_FADV_WILLNEED);
  }

  std::optional<FileRange> file_range(uint64_t offset, uint64_t length) const override {
    if (direct_ || offset + length > size() || !resident(fd_.get(), offset, length)) return std::nullopt;
    return FileRange{fd_.get(), offset, shared_from_this()};
  }

  // lseek(SEEK_DATA/SEEK_HOLE) runs on the calling thread: it reads the
  // extent tree, which the fs keeps cached, and a thread hop would cost more
  // than the call (qemu's file driver makes the same choice).
  Task<std::error_code> block_status(uint64_t offset, uint64_t length,
                                     std::vector<Extent>& out) override {
    if (length == 0) co_return std::error_code{};
    if (block_device_ || !seek_ok_.load(std::memory_order_relaxed)) {
      out.push_back({length, 0, 1});
      co_return std::error_code{};
    }
    const int fd = fd_.get();
    const uint64_t end = offset + length;
    uint64_t pos = offset;
    std::size_t pushed = 0;
    const uint64_t gen = data_generation();
    for (std::size_t round = 0; pos < end && round < kMaxExtentsPerCall; ++round) {
      if (const uint64_t known_end = known_data_end(pos); known_end > pos) {
        const uint64_t data_end = std::min(known_end, end);
        push(out, data_end - pos, 0, pushed);
        pos = data_end;
        continue;
      }
      off_t data = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
      if (data < 0) {
        int e = errno;
        if (e == ENXIO) {  // no data from pos on: a hole to the end
          push(out, end - pos, kExtentHole | kExtentZero, pushed);
        } else if (pushed == 0) {
          if (e == EINVAL || e == EOPNOTSUPP) seek_ok_ = false;  // the fs has no SEEK_DATA
          push(out, end - pos, 0, pushed);
        }
        break;
      }
      if (static_cast<uint64_t>(data) > pos) {
        uint64_t hole_end = std::min<uint64_t>(static_cast<uint64_t>(data), end);
        push(out, hole_end - pos, kExtentHole | kExtentZero, pushed);
        pos = hole_end;
        continue;
      }
      off_t hole = ::lseek(fd, static_cast<off_t>(pos), SEEK_HOLE);
      if (hole < 0) {
        push(out, end - pos, 0, pushed);
        break;
      }
      if (static_cast<uint64_t>(hole) <= pos) continue;  // punched meanwhile: look again
      remember_data(pos, static_cast<uint64_t>(hole), gen);
      uint64_t data_end = std::min<uint64_t>(static_cast<uint64_t>(hole), end);
      push(out, data_end - pos, 0, pushed);
      pos = data_end;
    }
    if (pushed == 0) out.push_back({end - offset, 0, 1});  // only races: say "data"
    co_return std::error_code{};
  }

 private:
  // The last data region lseek found (QEMU's block-status cache does the
  // same): a fully allocated file then costs one SEEK_DATA/SEEK_HOLE pair,
  // not one per request. On tmpfs each SEEK_HOLE walks the page cache to the
  // next hole, the end of such a file: milliseconds a call, which made a
  // client's block-status walk quadratic. Only data is remembered, and only
  // a punch (trim, write_zeroes) turns data into a hole: it forgets the
  // region, and a walk that overlapped a punch does not store its result.
  uint64_t data_generation() const {
    std::lock_guard lk(data_mu_);
    return data_gen_;
  }
  uint64_t known_data_end(uint64_t pos) const {
    std::lock_guard lk(data_mu_);
    return known_data_.first <= pos && pos < known_data_.second ? known_data_.second : 0;
  }
  void remember_data(uint64_t start, uint64_t end, uint64_t gen) {
    std::lock_guard lk(data_mu_);
    if (gen == data_gen_) known_data_ = {start, end};
  }
  void forget_data() {
    std::lock_guard lk(data_mu_);
    known_data_ = {0, 0};
    ++data_gen_;
  }
  static void push(std::vector<Extent>& out, uint64_t length, uint32_t flags, std::size_t& pushed) {
    if (pushed > 0 && out.back().flags == flags) {
      out.back().length += length;
    } else {
      out.push_back({length, flags, flags & kExtentHole ? 0u : 1u});
      ++pushed;
    }
  }

  void grew_to(uint64_t end) {
    if (block_device_) return;
    uint64_t cur = size_.load(std::memory_order_relaxed);
    while (end > cur && !size_.compare_exchange_weak(cur, end, std::memory_order_relaxed)) {
    }
  }

  Task<std::error_code> zero_range(uint64_t offset, uint64_t length, ZeroFlags flags) {
    const int fd = fd_.get();
    if (block_device_) {
      // Block devices: a zeroing discard when holes are allowed; otherwise
      // the kernel's zero-out, which may write zeroes (not fast).
      if (flags.may_trim) {
        auto ec = co_await io::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
                                         length);
        if (!ec || !unsupported(ec)) co_return ec;
      }
      if (flags.fast_only) co_return std::make_error_code(std::errc::operation_not_supported);
      auto ec = co_await io::fallocate(fd, FALLOC_FL_ZERO_RANGE, offset, length);
      if (!ec || !unsupported(ec)) co_return ec;
      co_return co_await write_zero_bytes(offset, length);
    }
    if (flags.may_trim && punch_ok_) {
      auto ec = co_await io::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
                                       length);
      if (!ec) co_return ec;
      if (!unsupported(ec)) co_return ec;
      punch_ok_ = false;
    }
    if (zero_range_ok_) {
      auto ec = co_await io::fallocate(fd, FALLOC_FL_ZERO_RANGE, offset, length);
      if (!ec) {
        grew_to(offset + length);
        co_return ec;
      }
      if (!unsupported(ec)) co_return ec;
      zero_range_ok_ = false;
    }
    if (punch_ok_) {  // punch, then allocate again: zeroes without a hole
      auto ec = co_await io::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
                                       length);
      if (!ec) {
        auto alloc = co_await io::fallocate(fd, 0, offset, length);
        if (!alloc) grew_to(offset + length);
        // A hole where allocation was preferred still reads as zeroes.
        co_return unsupported(alloc) ? std::error_code{} : alloc;
      }
      if (!unsupported(ec)) co_return ec;
      punch_ok_ = false;
    }
    if (flags.fast_only) co_return std::make_error_code(std::errc::operation_not_supported);
    co_return co_await write_zero_bytes(offset, length);
  }

  Task<std::error_code> write_zero_bytes(uint64_t offset, uint64_t length) {
    auto zeroes = zero_block();
    while (length > 0) {
      auto n = static_cast<std::size_t>(std::min<uint64_t>(length, zeroes.size()));
      if (auto ec = co_await io::write_all(fd_.get(), zeroes.first(n), offset)) co_return ec;
      offset += n;
      length -= n;
    }
    grew_to(offset);
    co_return std::error_code{};
  }

  Task<std::error_code> discard(uint64_t offset, uint64_t length) {
    if (!discard_ok_) co_return std::error_code{};
    // BLKDISCARD wants whole logical blocks: round inward to 4 KiB, which
    // every logical block size divides.
    uint64_t start = (offset + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
    uint64_t stop = (offset + length) / kDirectAlign * kDirectAlign;
    if (stop <= start) co_return std::error_code{};
    const int fd = fd_.get();
    int64_t r = co_await io::run_blocking([fd, start, stop]() -> int64_t {
      uint64_t range[2] = {start, stop - start};
      return ::ioctl(fd, BLKDISCARD, range) < 0 ? -errno : 0;
    });
    if (r < 0 && r != -EOPNOTSUPP) co_return errno_code(static_cast<int>(-r));
    co_return std::error_code{};
  }

  UniqueFd fd_;
  const bool block_device_;
  const bool direct_;
  const bool read_only_;
  const bool rotational_;
  const bool discard_ok_;
  std::atomic<uint64_t> size_;
  // What the filesystem turned out to support; learnt at open and on the
  // first EOPNOTSUPP.
  std::atomic<bool> punch_ok_;
  std::atomic<bool> zero_range_ok_;
  std::atomic<bool> seek_ok_{true};
  mutable std::mutex data_mu_;
  std::pair<uint64_t, uint64_t> known_data_{0, 0};  // [start, end), empty when equal
  uint64_t data_gen_ = 0;                           // bumped by every punch
  io::CachedWriteState write_state_;
};

std::string open_error_message(const std::string& path, int e, const RawFileOptions& o) {
  switch (e) {
    case ENOENT:
      return fmt::format("{}: no such file; fleece does not create disks (create it first, "
                         "e.g. qemu-img create -f raw {} 10G)", path, path);
    case EACCES:
    case EPERM:
      return o.read_only ? fmt::format("{}: permission denied; check the file's permissions", path)
                         : fmt::format("{}: permission denied for writing; fix the file's "
                                       "permissions or open the disk readonly", path);
    case EROFS:
      return fmt::format("{}: on a read-only file system; open the disk readonly", path);
    case EISDIR:
      return fmt::format("{}: is a directory, not a regular file or block device", path);
    case EINVAL:
      if (o.direct)
        return fmt::format("{}: the file system refuses O_DIRECT (cache=none); use "
                           "cache=writeback or put the disk on another file system", path);
      break;
    case ETXTBSY:
    case EBUSY:
      return fmt::format("{}: busy (in use by another program); stop it or open the disk readonly",
                         path);
    default:
      break;
  }
  return fmt::format("{}: cannot open: {}", path, std::strerror(e));
}

}  // namespace

Result<std::shared_ptr<Device>> open_raw_file(const std::string& path, RawFileOptions options,
                                              std::string* error_message) {
  auto fail = [&](int e, std::string message) -> Result<std::shared_ptr<Device>> {
    FLEECE_LOG_DEBUG("block", "{}", message);
    if (error_message) *error_message = std::move(message);
    return errno_code(e);
  };

  // O_NONBLOCK so that opening a FIFO by mistake does not hang; cleared below.
  int flags = (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
  if (options.direct) flags |= O_DIRECT;
  UniqueFd fd(::open(path.c_str(), flags));
  if (!fd) {
    int e = errno;
    return fail(e, open_error_message(path, e, options));
  }

  struct stat st{};
  if (::fstat(fd.get(), &st) < 0) {
    int e = errno;
    return fail(e, fmt::format("{}: cannot stat: {}", path, std::strerror(e)));
  }
  RawFile::Setup setup;
  setup.block_device = S_ISBLK(st.st_mode);
  if (!S_ISREG(st.st_mode) && !setup.block_device) {
    int e = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
    return fail(e, fmt::format("{}: not a regular file or block device", path));
  }
  // O_NONBLOCK on a file makes io_uring report EAGAIN instead of waiting.
  if (::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK) < 0) {
    int e = errno;
    return fail(e, fmt::format("{}: fcntl: {}", path, std::strerror(e)));
  }

  setup.direct = options.direct;
  setup.read_only = options.read_only;
  if (setup.block_device) {
    uint64_t bytes = 0;
    if (::ioctl(fd.get(), BLKGETSIZE64, &bytes) < 0) {
      int e = errno;
      return fail(e, fmt::format("{}: cannot read the block device's size: {}", path,
                                 std::strerror(e)));
    }
    setup.size = bytes;
    setup.rotational = block_queue_attribute(st.st_rdev, "rotational").value_or(0) != 0;
    setup.discard_ok = block_queue_attribute(st.st_rdev, "discard_max_bytes").value_or(0) > 0;
  } else {
    setup.size = static_cast<uint64_t>(st.st_size);
    if (!options.read_only) {
      // Does the fs punch holes? Ask with a punch past end of file, which
      // changes nothing a reader can see.
      off_t probe = (st.st_size + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
      setup.punch_ok =
          ::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, probe, kDirectAlign) == 0;
    }
  }
  setup.fd = std::move(fd);
  FLEECE_LOG_DEBUG("block", "opened {} ({}, {} bytes, {}{}, io: {})", path,
                   setup.block_device ? "block device" : "file", setup.size,
                   options.read_only ? "read-only" : "read-write",
                   options.direct ? ", O_DIRECT" : "", io::backend_name());
  return std::shared_ptr<Device>(std::make_shared<RawFile>(std::move(setup)));
}

}  // namespace fleece::block
