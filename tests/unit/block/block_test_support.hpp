// Helpers for the block/ unit tests: temporary files, running a coroutine
// to completion, byte patterns, and running a test under each I/O backend.
#pragma once

#include "block/device.hpp"
#include "block/io_engine.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace fleece::block::test {

// A file made with mkstemp in dir, truncated to size, removed at scope exit.
class TempFile {
 public:
  explicit TempFile(uint64_t size = 0, const std::string& dir = "/tmp") {
    std::string templ = dir + "/fleece-block-test-XXXXXX";
    int fd = ::mkstemp(templ.data());
    if (fd < 0) throw std::runtime_error("mkstemp in " + dir + " failed");
    if (::ftruncate(fd, static_cast<off_t>(size)) < 0) {
      ::close(fd);
      ::unlink(templ.c_str());
      throw std::runtime_error("ftruncate failed");
    }
    ::close(fd);
    path_ = templ;
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() { ::unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

  // Bytes of storage the file occupies (st_blocks), to see holes.
  uint64_t allocated_bytes() const {
    struct stat st{};
    ::stat(path_.c_str(), &st);
    return static_cast<uint64_t>(st.st_blocks) * 512;
  }
  // Whether [offset, offset+length) holds any data according to SEEK_DATA.
  bool has_data(uint64_t offset, uint64_t length) const {
    int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    off_t d = ::lseek(fd, static_cast<off_t>(offset), SEEK_DATA);
    ::close(fd);
    return d >= 0 && static_cast<uint64_t>(d) < offset + length;
  }
  std::vector<std::byte> contents() const {
    int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st{};
    ::fstat(fd, &st);
    std::vector<std::byte> out(static_cast<std::size_t>(st.st_size));
    std::size_t done = 0;
    while (done < out.size()) {
      ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    ::close(fd);
    return out;
  }

 private:
  std::string path_;
};

// Runs a coroutine on a fresh io_context until it completes; rethrows.
template <class T>
T run(Task<T> task) {
  boost::asio::io_context ctx;
  std::optional<T> result;
  std::exception_ptr error;
  boost::asio::co_spawn(ctx, std::move(task), [&](std::exception_ptr e, T value) {
    error = e;
    if (!e) result.emplace(std::move(value));
  });
  ctx.run();
  if (error) std::rethrow_exception(error);
  return std::move(*result);
}

inline void run(Task<void> task) {
  boost::asio::io_context ctx;
  std::exception_ptr error;
  boost::asio::co_spawn(ctx, std::move(task), [&](std::exception_ptr e) { error = e; });
  ctx.run();
  if (error) std::rethrow_exception(error);
}

// A recognisable pattern: byte i of a buffer written at offset is a
// function of (offset + i) and seed.
inline std::vector<std::byte> pattern(uint64_t offset, std::size_t length, uint8_t seed = 1) {
  std::vector<std::byte> v(length);
  for (std::size_t i = 0; i < length; ++i) {
    uint64_t x = offset + i;
    v[i] = static_cast<std::byte>((x * 131 + (x >> 9) * 7 + seed * 29) & 0xff);
  }
  return v;
}

inline bool all_zero(std::span<const std::byte> s) {
  for (std::byte b : s)
    if (b != std::byte{0}) return false;
  return true;
}

// Runs the enclosing test case once per backend (doctest subcases).
inline io::Backend each_backend() {
  io::Backend wanted = io::Backend::io_uring;
  SUBCASE("io_uring") { wanted = io::Backend::io_uring; }
  SUBCASE("thread-pool") { wanted = io::Backend::thread_pool; }
  io::Backend got = io::set_backend(wanted);
  if (got != wanted) MESSAGE("io_uring unavailable here: running on the thread pool");
  return got;
}

}  // namespace fleece::block::test
