#include "block/io_engine.hpp"

#include "block/blocking_pool.hpp"
#include "block/uring_service.hpp"
#include "util/log.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fcntl.h>
#include <liburing.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

namespace fleece::block::io {

namespace {

std::atomic<bool> g_uring_usable{false};  // the probe succeeded
std::atomic<Backend> g_backend{Backend::thread_pool};
std::once_flag g_decided;

void decide_backend() {
  std::call_once(g_decided, [] {
    const char* env = std::getenv("FLEECE_IO_BACKEND");
    if (env && std::string_view(env) == "threads") {  // forced: set_backend cannot undo it
      FLEECE_LOG_INFO("block", "FLEECE_IO_BACKEND=threads: using thread pool for disk I/O");
      g_backend = Backend::thread_pool;
      return;
    }
    io_uring ring;
    int r = io_uring_queue_init(8, &ring, 0);
    if (r == 0) {
      io_uring_queue_exit(&ring);
      g_uring_usable = true;
    }
    if (r != 0) {
      FLEECE_LOG_WARN("block", "io_uring unavailable ({}); using thread pool", std::strerror(-r));
      g_backend = Backend::thread_pool;
    } else {
      g_backend = Backend::io_uring;
    }
  });
}

std::error_code errno_code(int e) { return {e, std::generic_category()}; }

Result<std::size_t> to_size(int64_t res) {
  if (res < 0) return errno_code(static_cast<int>(-res));
  return static_cast<std::size_t>(res);
}

std::error_code to_error(int64_t res) {
  return res < 0 ? errno_code(static_cast<int>(-res)) : std::error_code{};
}

int64_t syscall_result(int64_t r) { return r < 0 ? -errno : r; }

// The io_context behind an executor, for the executor types fleece uses
// (an io_context's, work-tracking or not, possibly in a strand).
boost::asio::io_context* io_context_of(const boost::asio::any_io_executor& ex) {
  using Plain = boost::asio::io_context::executor_type;
  using Tracked = boost::asio::io_context::basic_executor_type<std::allocator<void>, 4>;
  if (auto* e = ex.target<Plain>()) return &e->context();
  if (auto* e = ex.target<Tracked>()) return &e->context();
  if (auto* e = ex.target<boost::asio::strand<Plain>>()) return &e->get_inner_executor().context();
  return nullptr;
}

// The ring of the calling coroutine's io_context, or nullptr when the thread
// pool is to be used.
Task<detail::UringService*> current_ring() {
  if (backend() != Backend::io_uring) co_return nullptr;
  auto ex = co_await boost::asio::this_coro::executor;
  boost::asio::io_context* io = io_context_of(ex);
  if (!io) co_return nullptr;
  auto& svc = boost::asio::use_service<detail::UringService>(*io);
  if (!svc.ok()) {
    static std::once_flag warned;
    std::call_once(warned, [&] {
      FLEECE_LOG_WARN("block", "io_uring unavailable for an event loop ({}); using thread pool",
                      svc.init_error().message());
    });
    co_return nullptr;
  }
  co_return &svc;
}

// Runs prep on the ring, or blocking on the pool.
template <class Prep, class Blocking>
Task<int64_t> perform(Prep prep, Blocking blocking) {
  if (detail::UringService* ring = co_await current_ring())
    co_return co_await ring->async_submit(prep, boost::asio::use_awaitable);
  co_return co_await detail::run_on_pool(blocking);
}

}  // namespace

Backend backend() {
  decide_backend();
  return g_backend.load(std::memory_order_relaxed);
}

std::string_view backend_name() {
  return backend() == Backend::io_uring ? "io_uring" : "thread-pool";
}

Backend set_backend(Backend wanted) {
  decide_backend();
  if (wanted == Backend::io_uring && !g_uring_usable) wanted = Backend::thread_pool;
  g_backend = wanted;
  return wanted;
}

Task<Result<std::size_t>> preadv(int fd, std::span<const iovec> iov, uint64_t offset,
                                 int rw_flags) {
  co_return to_size(co_await perform(
      [=](io_uring_sqe* sqe) {
        io_uring_prep_readv(sqe, fd, iov.data(), static_cast<unsigned>(iov.size()), offset);
        sqe->rw_flags = rw_flags;
      },
      [=] {
        return syscall_result(::preadv2(fd, iov.data(), static_cast<int>(iov.size()),
                                        static_cast<off_t>(offset), rw_flags));
      }));
}

Task<Result<std::size_t>> pwritev(int fd, std::span<const iovec> iov, uint64_t offset,
                                  int rw_flags) {
  co_return to_size(co_await perform(
      [=](io_uring_sqe* sqe) {
        io_uring_prep_writev(sqe, fd, iov.data(), static_cast<unsigned>(iov.size()), offset);
        sqe->rw_flags = rw_flags;
      },
      [=] {
        return syscall_result(::pwritev2(fd, iov.data(), static_cast<int>(iov.size()),
                                         static_cast<off_t>(offset), rw_flags));
      }));
}

Task<Result<std::size_t>> pread(int fd, std::span<std::byte> buf, uint64_t offset,
                                int rw_flags) {
  co_return to_size(co_await perform(
      [=](io_uring_sqe* sqe) {
        io_uring_prep_read(sqe, fd, buf.data(), static_cast<unsigned>(buf.size()), offset);
        sqe->rw_flags = rw_flags;
      },
      [=] {
        iovec v{buf.data(), buf.size()};
        return syscall_result(::preadv2(fd, &v, 1, static_cast<off_t>(offset), rw_flags));
      }));
}

Task<Result<std::size_t>> pwrite(int fd, std::span<const std::byte> buf, uint64_t offset,
                                 int rw_flags) {
  co_return to_size(co_await perform(
      [=](io_uring_sqe* sqe) {
        io_uring_prep_write(sqe, fd, buf.data(), static_cast<unsigned>(buf.size()), offset);
        sqe->rw_flags = rw_flags;
      },
      [=] {
        iovec v{const_cast<std::byte*>(buf.data()), buf.size()};
        return syscall_result(::pwritev2(fd, &v, 1, static_cast<off_t>(offset), rw_flags));
      }));
}

Task<Result<std::size_t>> pread_cached(int fd, std::span<std::byte> buf, uint64_t offset) {
  iovec v{buf.data(), buf.size()};
  ssize_t n = ::preadv2(fd, &v, 1, static_cast<off_t>(offset), RWF_NOWAIT);
  if (n > 0 || (n == 0 && !buf.empty())) co_return static_cast<std::size_t>(n);  // hit, or EOF
  // EAGAIN: not (all) in the page cache. EOPNOTSUPP/EINVAL: the fs or
  // kernel refuses RWF_NOWAIT. Either way the asynchronous path decides.
  if (n < 0 && errno != EAGAIN && errno != EOPNOTSUPP && errno != EINVAL)
    co_return errno_code(errno);
  co_return co_await pread(fd, buf, offset);
}

Task<std::error_code> read_exact(int fd, std::span<std::byte> buf, uint64_t offset,
                                 bool cached_first) {
  std::size_t done = 0;
  while (done < buf.size()) {
    auto rest = buf.subspan(done);
    auto r = cached_first ? co_await pread_cached(fd, rest, offset + done)
                          : co_await pread(fd, rest, offset + done);
    if (!r) {
      if (r.error() == std::errc::interrupted) continue;
      co_return r.error();
    }
    if (*r == 0) {  // end of file: the rest reads as zeroes
      std::memset(rest.data(), 0, rest.size());
      break;
    }
    done += *r;
  }
  co_return std::error_code{};
}

Task<std::error_code> write_all(int fd, std::span<const std::byte> buf, uint64_t offset,
                                int rw_flags) {
  std::size_t done = 0;
  while (done < buf.size()) {
    auto r = co_await pwrite(fd, buf.subspan(done), offset + done, rw_flags);
    if (!r) {
      if (r.error() == std::errc::interrupted) continue;
      co_return r.error();
    }
    if (*r == 0) co_return std::make_error_code(std::errc::no_space_on_device);
    done += *r;
  }
  co_return std::error_code{};
}

namespace {

int64_t monotonic_ns() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// One inline attempt for write_all_cached: bytes written, or -errno; -EAGAIN
// when the write must go asynchronous.
int64_t try_write_inline(int fd, std::span<const std::byte> buf, uint64_t offset, int rw_flags,
                         CachedWriteState& state) {
  if (rw_flags & RWF_DSYNC) return -EAGAIN;
  iovec v{const_cast<std::byte*>(buf.data()), buf.size()};
  if (!state.nowait_refused.load(std::memory_order_relaxed)) {
    ssize_t n = ::pwritev2(fd, &v, 1, static_cast<off_t>(offset), rw_flags | RWF_NOWAIT);
    if (n >= 0) return n;
    int e = errno;
    if (e != EOPNOTSUPP && e != EINVAL) return e == EAGAIN ? -EAGAIN : -e;
    state.nowait_refused.store(true, std::memory_order_relaxed);
  }
  if (buf.size() > kInlineWriteMax) return -EAGAIN;
  int64_t start = monotonic_ns();
  if (start < state.inline_resume_ns.load(std::memory_order_relaxed)) return -EAGAIN;
  ssize_t n = ::pwritev2(fd, &v, 1, static_cast<off_t>(offset), rw_flags);
  int e = errno;
  int64_t end = monotonic_ns();
  if (end - start > kInlineWriteSlowNs)
    state.inline_resume_ns.store(end + kInlineWriteBackoffNs, std::memory_order_relaxed);
  return n >= 0 ? n : -e;
}

}  // namespace

Task<std::error_code> write_all_cached(int fd, std::span<const std::byte> buf, uint64_t offset,
                                       int rw_flags, CachedWriteState& state) {
  std::size_t done = 0;
  while (done < buf.size()) {
    auto rest = buf.subspan(done);
    int64_t n = try_write_inline(fd, rest, offset + done, rw_flags, state);
    if (n == -EINTR) continue;
    if (n == -EAGAIN) {
      // The rest goes the asynchronous way.
      co_return co_await write_all(fd, rest, offset + done, rw_flags);
    }
    if (n < 0) co_return errno_code(static_cast<int>(-n));
    if (n == 0) co_return std::make_error_code(std::errc::no_space_on_device);
    done += static_cast<std::size_t>(n);
  }
  co_return std::error_code{};
}

Task<std::error_code> fdatasync(int fd) {
  co_return to_error(co_await perform(
      [=](io_uring_sqe* sqe) { io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC); },
      [=] { return syscall_result(::fdatasync(fd)); }));
}

Task<std::error_code> fsync(int fd) {
  co_return to_error(co_await perform([=](io_uring_sqe* sqe) { io_uring_prep_fsync(sqe, fd, 0); },
                                      [=] { return syscall_result(::fsync(fd)); }));
}

Task<std::error_code> fallocate(int fd, int mode, uint64_t offset, uint64_t length) {
  co_return to_error(co_await perform(
      [=](io_uring_sqe* sqe) { io_uring_prep_fallocate(sqe, fd, mode, static_cast<off_t>(offset), static_cast<off_t>(length)); },
      [=] {
        return syscall_result(
            ::fallocate(fd, mode, static_cast<off_t>(offset), static_cast<off_t>(length)));
      }));
}

Task<std::error_code> fadvise(int fd, uint64_t offset, uint64_t length, int advice) {
  co_return to_error(co_await perform(
      [=](io_uring_sqe* sqe) {
        io_uring_prep_fadvise(sqe, fd, offset, static_cast<off_t>(length), advice);
      },
      [=]() -> int64_t {
        // posix_fadvise returns the error number instead of setting errno.
        int e = ::posix_fadvise(fd, static_cast<off_t>(offset), static_cast<off_t>(length), advice);
        return -e;
      }));
}

Task<int64_t> run_blocking(std::function<int64_t()> fn) {
  return detail::run_on_pool(std::move(fn));
}

void close_in_background(UniqueFd fd) {
  if (fd) boost::asio::post(detail::io_thread_pool(), [fd = fd.release()] { ::close(fd); });
}

}  // namespace fleece::block::io
