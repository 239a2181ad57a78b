// Helpers for the qcow2 tests: a memory file that grows like a real one,
// running a coroutine to completion, temp files and the qemu tools.
#pragma once

#include "block/device.hpp"
#include "cow/qcow2_image.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <vector>

namespace fleece::cow::test {

// A file in memory that grows when written past its end, like a regular
// file (and unlike block::MemoryDevice, whose size is fixed).
class GrowingFile final : public block::Device {
 public:
  GrowingFile() = default;
  explicit GrowingFile(std::vector<std::byte> bytes) : bytes_(std::move(bytes)) {}

  uint64_t size() const override {
    std::lock_guard g(mu_);
    return bytes_.size();
  }
  block::Capabilities capabilities() const override {
    block::Capabilities c;
    c.min_block = min_block;
    c.read_only = read_only;
    return c;
  }
  block::Task<std::error_code> read(uint64_t offset, std::span<std::byte> out) override {
    co_await maybe_yield();
    if (!aligned(offset, out.data(), out.size())) co_return std::make_error_code(std::errc::invalid_argument);
    std::lock_guard g(mu_);
    if (fail_reads) co_return std::make_error_code(std::errc::io_error);
    if (offset > bytes_.size() || out.size() > bytes_.size() - offset)
      co_return std::make_error_code(std::errc::invalid_argument);
    std::memcpy(out.data(), bytes_.data() + offset, out.size());
    co_return std::error_code{};
  }
  block::Task<std::error_code> write(uint64_t offset, std::span<const std::byte> data,
                                     block::WriteFlags flags) override {
    co_await maybe_yield();
    if (!aligned(offset, data.data(), data.size())) co_return std::make_error_code(std::errc::invalid_argument);
    std::lock_guard g(mu_);
    if (fail_writes) co_return std::make_error_code(std::errc::io_error);
    if (offset + data.size() > bytes_.size()) bytes_.resize(offset + data.size());
    std::memcpy(bytes_.data() + offset, data.data(), data.size());
    ++writes;
    if (flags.fua) ++fua_writes;
    co_return std::error_code{};
  }
  block::Task<std::error_code> write_zeroes(uint64_t offset, uint64_t length,
                                            block::ZeroFlags) override {
    std::vector<std::byte> z(length);
    co_return co_await write(offset, z, {});
  }
  // As a punched hole: the bytes read as zeroes; each trim is recorded.
  block::Task<std::error_code> trim(uint64_t offset, uint64_t length, block::WriteFlags) override {
    std::lock_guard lk(mu_);
    trims.emplace_back(offset, length);
    if (offset < bytes_.size())
      std::memset(bytes_.data() + offset, 0, std::min<uint64_t>(length, bytes_.size() - offset));
    co_return std::error_code{};
  }
  block::Task<std::error_code> flush() override {
    ++flushes;
    co_return std::error_code{};
  }
  block::Task<std::error_code> block_status(uint64_t offset, uint64_t length,
                                            std::vector<block::Extent>& out) override {
    out.push_back(block::Extent{length, 0, 1});
    (void)offset;
    co_return std::error_code{};
  }

  std::vector<std::byte> bytes() const {
    std::lock_guard g(mu_);
    return bytes_;
  }

  uint32_t min_block = 1;
  bool read_only = false;
  bool yield_each_op = false;  // suspend in every read/write, as real I/O does
  bool fail_reads = false;
  bool fail_writes = false;
  std::atomic<uint64_t> writes{0};
  std::atomic<uint64_t> flushes{0};
  std::atomic<uint64_t> fua_writes{0};
  std::vector<std::pair<uint64_t, uint64_t>> trims;  // (offset, length), under mu_

 private:
  // What O_DIRECT demands when min_block > 1.
  bool aligned(uint64_t offset, const void* p, std::size_t n) const {
    return offset % min_block == 0 && n % min_block == 0 &&
           reinterpret_cast<uintptr_t>(p) % min_block == 0;
  }
  boost::asio::awaitable<void> maybe_yield() {
    if (yield_each_op)
      co_await boost::asio::post(co_await boost::asio::this_coro::executor,
                                 boost::asio::use_awaitable);
  }

  mutable std::mutex mu_;
  std::vector<std::byte> bytes_;
};

// Runs one coroutine on a fresh io_context and returns its result.
template <class T>
T run(boost::asio::awaitable<T> task) {
  boost::asio::io_context io;
  auto fut = boost::asio::co_spawn(io, std::move(task), boost::asio::use_future);
  io.run();
  return fut.get();
}

inline std::vector<std::byte> pattern(std::size_t n, uint32_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = std::byte(rng());
  return v;
}

inline std::vector<std::byte> filled(std::size_t n, uint8_t value) {
  return std::vector<std::byte>(n, std::byte(value));
}

// A directory removed with everything in it at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/fleece-qcow2-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

inline void write_file(const std::string& path, std::span<const std::byte> bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

inline std::vector<std::byte> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> c((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::byte> v(c.size());
  std::memcpy(v.data(), c.data(), c.size());
  return v;
}

// Runs a shell command; returns its exit status and stdout+stderr.
inline std::pair<int, std::string> shell(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, ""};
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace fleece::cow::test
