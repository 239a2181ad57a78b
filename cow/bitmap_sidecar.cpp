#include "cow/bitmap_sidecar.hpp"

#include "block/io_engine.hpp"
#include "block/unique_fd.hpp"
#include "util/errors.hpp"
#include "util/log.hpp"

#include <boost/crc.hpp>
#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <unordered_set>

namespace fleece::cow {

using block::Task;

namespace {

constexpr char kMagic[8] = {'F', 'L', 'E', 'E', 'C', 'E', 'B', 'M'};
constexpr uint32_t kVersion = 1;
constexpr std::size_t kHeader = 32, kHead = 16, kTrailer = 4;
constexpr uint32_t kMaxCount = 65535;

void put_le(std::vector<std::byte>& v, uint64_t x, int n) {
  for (int i = 0; i < n; ++i) v.push_back(std::byte(x >> (8 * i)));
}
uint64_t get_le(const std::byte* p, int n) {
  uint64_t x = 0;
  for (int i = n; i-- > 0;) x = (x << 8) | uint64_t(p[i]);
  return x;
}
uint32_t crc32(std::span<const std::byte> b) {
  boost::crc_32_type c;
  c.process_bytes(b.data(), b.size());
  return c.checksum();
}
uint64_t data_len(uint64_t disk_size, uint32_t gbits) {
  const uint64_t g = uint64_t{1} << gbits;
  return ((disk_size + g - 1) / g + 7) / 8;
}
std::error_code fail(std::string* why, std::error_code ec, std::string msg) {
  if (why) *why = std::move(msg);
  return ec;
}
std::error_code errno_code(int e) { return {e, std::system_category()}; }

// Blocking helpers, run on the I/O pool.
int64_t read_whole(const std::string& path, std::vector<std::byte>& out) {
  block::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return -errno;
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0) return -errno;
  if (uint64_t(st.st_size) > (uint64_t{1} << 32)) return -EFBIG;
  out.resize(std::size_t(st.st_size));
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd.get(), out.data() + done, out.size() - done, off_t(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) break;
    done += std::size_t(n);
  }
  out.resize(done);
  return 0;
}

int64_t write_atomically(const std::string& path, std::span<const std::byte> bytes) {
  const std::string tmp = path + ".tmp";
  {
    block::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) return -errno;
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        return -e;
      }
      done += std::size_t(n);
    }
    if (::fsync(fd.get()) != 0) {
      const int e = errno;
      ::unlink(tmp.c_str());
      return -e;
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return -e;
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  block::UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d) return -errno;
  if (::fsync(d.get()) != 0) return -errno;
  return 0;
}

}  // namespace

std::vector<std::byte> BitmapSidecar::encode(uint64_t disk_size, std::span<const Entry> entries) {
  std::vector<std::byte> v;
  for (char c : kMagic) v.push_back(std::byte(c));
  put_le(v, kVersion, 4);
  put_le(v, entries.size(), 4);
  put_le(v, disk_size, 8);
  put_le(v, 0, 8);
  for (const auto& e : entries) {
    put_le(v, e.name.size(), 2);
    put_le(v, e.granularity_bits, 1);
    put_le(v, 0, 1);
    put_le(v, e.flags, 4);
    put_le(v, e.data.size(), 8);
    for (char c : e.name) v.push_back(std::byte(c));
    v.insert(v.end(), e.data.begin(), e.data.end());
  }
  put_le(v, crc32(v), 4);
  return v;
}

Result<std::vector<BitmapSidecar::Entry>> BitmapSidecar::parse(std::span<const std::byte> f,
                                                               uint64_t* disk_size,
                                                               std::string* why) {
  const auto corrupt = make_error_code(Errc::corrupt_image);
  if (f.size() < kHeader + kTrailer || std::memcmp(f.data(), kMagic, 8) != 0)
    return fail(why, corrupt, "not a fleece bitmap sidecar (bad magic or too short)");
  const uint32_t version = uint32_t(get_le(f.data() + 8, 4));
  if (version != kVersion)
    return fail(why, make_error_code(Errc::unsupported_feature),
                fmt::format("bitmap sidecar version {} is not supported (only {})", version,
                            kVersion));
  const std::size_t body = f.size() - kTrailer;
  if (crc32(f.first(body)) != uint32_t(get_le(f.data() + body, 4)))
    return fail(why, corrupt, "bitmap sidecar checksum mismatch (damaged or truncated)");
  const uint32_t count = uint32_t(get_le(f.data() + 12, 4));
  *disk_size = get_le(f.data() + 16, 8);
  if (count > kMaxCount || get_le(f.data() + 24, 8) != 0)
    return fail(why, corrupt, fmt::format("bitmap sidecar header is invalid (count {})", count));
  std::vector<Entry> out;
  std::unordered_set<std::string> names;
  std::size_t off = kHeader;
  for (uint32_t i = 0; i < count; ++i) {
    if (body - off < kHead)
      return fail(why, corrupt, fmt::format("bitmap sidecar ends inside bitmap {}", i));
    const std::byte* p = f.data() + off;
    Entry e;
    const uint64_t name_len = get_le(p, 2);
    e.granularity_bits = uint32_t(get_le(p + 2, 1));
    e.flags = uint32_t(get_le(p + 4, 4));
    const uint64_t len = get_le(p + 8, 8);
    if (name_len == 0 || name_len > DirtyBitmap::kMaxNameLength || get_le(p + 3, 1) != 0 ||
        e.granularity_bits < 9 || e.granularity_bits > 31 || (e.flags & ~(kInUse | kEnabled)))
      return fail(why, corrupt, fmt::format("bitmap sidecar entry {} has invalid fields", i));
    const bool in_use = e.flags & kInUse;
    if ((!in_use || len != 0) && len != data_len(*disk_size, e.granularity_bits))
      return fail(why, corrupt,
                  fmt::format("bitmap sidecar entry {}: {} data bytes, the disk size needs {}", i,
                              len, data_len(*disk_size, e.granularity_bits)));
    if (name_len + len > body - off - kHead)
      return fail(why, corrupt, fmt::format("bitmap sidecar entry {} runs past the file", i));
    e.name.assign(reinterpret_cast<const char*>(p + kHead), name_len);
    if (!names.insert(e.name).second)
      return fail(why, corrupt, fmt::format("bitmap sidecar names '{}' twice", e.name));
    e.data.assign(p + kHead + name_len, p + kHead + name_len + len);
    off += kHead + name_len + len;
    out.push_back(std::move(e));
  }
  if (off != body)
    return fail(why, corrupt, fmt::format("bitmap sidecar has {} bytes after its bitmaps",
                                          body - off));
  return out;
}

Task<Result<std::unique_ptr<BitmapSidecar>>> BitmapSidecar::open(const std::string& path,
                                                                 uint64_t disk_size,
                                                                 bool writable, std::string* why) {
  std::unique_ptr<BitmapSidecar> sc(new BitmapSidecar(path, disk_size, writable));
  std::vector<std::byte> bytes;
  std::function<int64_t()> read_fn = [&] { return read_whole(path, bytes); };
  const int64_t r = co_await block::io::run_blocking(read_fn);
  if (r == -ENOENT) co_return sc;  // no bitmaps yet
  if (r < 0)
    co_return fail(why, errno_code(int(-r)),
                   fmt::format("reading bitmap sidecar {}: {}", path, std::strerror(int(-r))));
  uint64_t recorded_size = 0;
  std::string reason;
  auto entries = parse(bytes, &recorded_size, &reason);
  if (!entries) {
    reason = fmt::format("{}: {}", path, reason);
    if (writable) {
      // Never trusted again; kept for inspection.
      const std::string aside = path + ".bad";
      std::function<int64_t()> mv = [&]() -> int64_t {
        return ::rename(path.c_str(), aside.c_str()) == 0 ? 0 : -errno;
      };
      if (co_await block::io::run_blocking(mv) == 0) reason += "; moved aside to " + aside;
    }
    FLEECE_LOG_ERROR("bitmap", "{}", reason);
    co_return fail(why, entries.error(), std::move(reason));
  }
  for (auto& e : *entries) {
    auto made = DirtyBitmap::create(e.name, disk_size, uint64_t{1} << e.granularity_bits);
    if (!made) co_return fail(why, made.error(), fmt::format("{}: bitmap '{}': {}", path, e.name,
                                                             made.error().message()));
    auto b = *made;
    b->set_persistent(true);
    b->set_enabled((e.flags & kEnabled) != 0);
    if ((e.flags & kInUse) || recorded_size != disk_size) {
      b->set_inconsistent();
      e.flags |= kInUse;
      e.data.clear();
      FLEECE_LOG_WARN("bitmap", "{}: bitmap '{}' is inconsistent ({}): a full backup is needed",
                      path, e.name,
                      recorded_size != disk_size ? "the disk changed size" : "in use at a crash");
    } else {
      b->deserialize_or(0, e.data);
    }
    sc->loaded_.push_back(b);
  }
  sc->disk_ = std::move(*entries);
  if (writable && !sc->disk_.empty()) {
    auto next = sc->disk_;
    for (auto& e : next) e.flags |= kInUse;
    if (auto ec = co_await sc->write(next))
      co_return fail(why, ec, fmt::format("marking bitmaps in use in {}: {}", path, ec.message()));
  }
  co_return sc;
}

Task<std::error_code> BitmapSidecar::write(const std::vector<Entry>& entries) {
  // Entries recorded for another disk size keep no data, so the header's
  // size is this disk's.
  const auto bytes = encode(disk_size_, entries);
  std::function<int64_t()> fn = [&] { return write_atomically(path_, bytes); };
  const int64_t r = co_await block::io::run_blocking(fn);
  if (r < 0) {
    FLEECE_LOG_ERROR("bitmap", "writing bitmap sidecar {}: {}", path_, std::strerror(int(-r)));
    co_return errno_code(int(-r));
  }
  disk_ = entries;
  co_return std::error_code{};
}

Task<std::error_code> BitmapSidecar::store(
    const std::vector<std::shared_ptr<DirtyBitmap>>& bitmaps) {
  if (!writable_) co_return make_error_code(std::errc::read_only_file_system);
  std::vector<Entry> next;
  for (const auto& b : bitmaps) {
    if (!b || !b->persistent()) continue;
    if (b->size() != disk_size_) co_return make_error_code(std::errc::invalid_argument);
    Entry e;
    e.name = b->name();
    e.granularity_bits = b->granularity_bits();
    e.flags = b->enabled() ? kEnabled : 0;
    if (b->inconsistent()) {
      e.flags |= kInUse;
    } else {
      e.data.resize(b->serialized_bytes());
      b->serialize(0, e.data);
    }
    next.push_back(std::move(e));
  }
  if (next.size() > kMaxCount) co_return make_error_code(std::errc::too_many_files_open);
  co_return co_await write(next);
}

Task<std::error_code> BitmapSidecar::remove(const std::string& name) {
  if (!writable_) co_return make_error_code(std::errc::read_only_file_system);
  std::vector<Entry> next;
  bool found = false;
  for (const auto& e : disk_) {
    if (e.name == name)
      found = true;
    else
      next.push_back(e);
  }
  if (!found) co_return make_error_code(std::errc::no_such_file_or_directory);
  co_return co_await write(next);
}

}  // namespace fleece::cow
