// io: asynchronous disk I/O on file descriptors, for coroutines.
//
// Every call is a coroutine that completes on the caller's executor. Two
// backends do the work:
//
//  * io_uring (preferred): one ring per io_context (UringService, an Asio
//    service), created on first use from a coroutine running on that
//    context. SQEs are queued and submitted once per turn of the event loop,
//    completions are reaped through an eventfd watched by the io_context.
//    The fd and the buffers must stay valid until the call completes (they
//    do when the caller co_awaits it).
//  * thread-pool: blocking preadv2/pwritev2/fdatasync/fallocate on a shared
//    pool of threads, resuming the coroutine on its executor. Used when
//    io_uring_queue_init is refused (EPERM/ENOSYS in many containers),
//    when the coroutine's execution context is not an io_context, or when
//    FLEECE_IO_BACKEND=threads is set in the environment.
//
// Results: byte counts as Result<size_t> (a short count is possible, as with
// pread(2): callers that need the whole range use read_exact/write_all);
// errors as std::error_code with the errno the kernel reported.
//
// rw_flags are preadv2/pwritev2's RWF_* flags: RWF_DSYNC makes a write
// durable before it completes (NBD FUA).
//
// Thread safety: any function may be called concurrently from coroutines on
// any number of io_contexts / threads.
#pragma once

#include "block/device.hpp"
#include "block/unique_fd.hpp"
#include "util/result.hpp"

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <system_error>

namespace fleece::block::io {

enum class Backend { io_uring, thread_pool };

// The backend in use for new operations: decided once (environment, then a
// probe of io_uring_queue_init; a refusal is logged once at warn level).
Backend backend();
std::string_view backend_name();  // "io_uring" or "thread-pool"

// Switches the backend for operations started afterwards (tests, or a host
// that wants no io_uring). Asking for io_uring where it is unavailable keeps
// the thread pool, and so does FLEECE_IO_BACKEND=threads (it always wins).
// Returns the backend now in use.
Backend set_backend(Backend wanted);

// Vectored I/O at an offset. Reads return 0 at end of file.
Task<Result<std::size_t>> preadv(int fd, std::span<const iovec> iov, uint64_t offset,
                                 int rw_flags = 0);
Task<Result<std::size_t>> pwritev(int fd, std::span<const iovec> iov, uint64_t offset,
                                  int rw_flags = 0);

// One buffer.
Task<Result<std::size_t>> pread(int fd, std::span<std::byte> buf, uint64_t offset,
                                int rw_flags = 0);
Task<Result<std::size_t>> pwrite(int fd, std::span<const std::byte> buf, uint64_t offset,
                                 int rw_flags = 0);

// pread for buffered (not O_DIRECT) fds: tries preadv2(RWF_NOWAIT) on the
// calling thread first, so a page-cache hit costs one syscall and no
// hand-off; goes asynchronous only for the part not in the cache.
Task<Result<std::size_t>> pread_cached(int fd, std::span<std::byte> buf, uint64_t offset);

// What write_all_cached learnt about one buffered fd. Shared by every
// coroutine writing to that fd; all members are updated with relaxed atomics.
struct CachedWriteState {
  std::atomic<bool> nowait_refused{false};     // the fs has no RWF_NOWAIT buffered writes (ext4)
  std::atomic<int64_t> inline_resume_ns{0};    // no blocking inline write before this time
};

// write_all for buffered (not O_DIRECT) fds, the counterpart of pread_cached:
// the data goes into the page cache on the calling thread when that cannot
// wait, so a write costs one syscall and no hand-off to a kernel worker
// (io_uring punts buffered writes the fs cannot do without blocking to
// io-wq threads, one at a time per file).
//  * pwritev2(RWF_NOWAIT) first; EAGAIN goes asynchronous.
//  * where the fs refuses RWF_NOWAIT for buffered writes (ext4), a plain
//    pwritev2 on the calling thread for writes up to kInlineWriteMax, as
//    long as such writes return quickly: one that took longer than
//    kInlineWriteSlowNs (dirty-page throttling, journal wait) sends the
//    writes of the next kInlineWriteBackoffNs to the asynchronous path.
//  * RWF_DSYNC writes (FUA) wait for the disk: always asynchronous.
inline constexpr std::size_t kInlineWriteMax = 256 * 1024;
inline constexpr int64_t kInlineWriteSlowNs = 1'000'000;
inline constexpr int64_t kInlineWriteBackoffNs = 100'000'000;
Task<std::error_code> write_all_cached(int fd, std::span<const std::byte> buf, uint64_t offset,
                                       int rw_flags, CachedWriteState& state);

// Whole-range helpers: loop on short transfers. read_exact fills the bytes
// past end of file with zeroes (a device reads as zeroes beyond its data).
// cached_first selects pread_cached for the reads.
Task<std::error_code> read_exact(int fd, std::span<std::byte> buf, uint64_t offset,
                                 bool cached_first = false);
Task<std::error_code> write_all(int fd, std::span<const std::byte> buf, uint64_t offset,
                                int rw_flags = 0);

Task<std::error_code> fdatasync(int fd);
Task<std::error_code> fsync(int fd);
// fallocate(2): mode is FALLOC_FL_* (PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE, 0 ...).
Task<std::error_code> fallocate(int fd, int mode, uint64_t offset, uint64_t length);
// posix_fadvise(2) advice (POSIX_FADV_WILLNEED ...).
Task<std::error_code> fadvise(int fd, uint64_t offset, uint64_t length, int advice);

// Runs a blocking call (an ioctl, ftruncate, lseek on a slow fs ...) on the
// I/O thread pool whatever the backend, and resumes on the caller's
// executor. fn returns a syscall-style result: >= 0, or -errno.
Task<int64_t> run_blocking(std::function<int64_t()> fn);

// Closes fd on the I/O thread pool without waiting for it. The last close
// of an unlinked file frees all its blocks, which takes seconds for a large
// file on a filesystem mounted with -o discard: not on a thread that
// serves guests.
void close_in_background(UniqueFd fd);

}  // namespace fleece::block::io
