// fleece::Disk: the host's in-process I/O path onto an open disk.
//
// Every request is looked up in the disk table when it is submitted, so it
// reaches the device the table holds at that moment: the very object NBD
// exports of the disk use (and whatever filter fleecing installs there).
// Requests run as coroutines on the engine's context; blocking calls wait
// for the same coroutine on the caller's thread.
#include "fleece/fleece.hpp"

#include "block/buffer.hpp"
#include "block/device.hpp"
#include "server/embed_core.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <cstring>
#include <future>
#include <new>
#include <utility>

namespace fleece {

namespace asio = boost::asio;

struct Disk::Impl {
  std::shared_ptr<server::EmbedCore> core;
  std::string name;
  uint64_t size = 0;
  bool read_only = false;
};

namespace {

enum class Kind { read, write, zeroes, trim, flush };

struct Request {
  Kind kind = Kind::flush;
  uint64_t offset = 0;
  uint64_t length = 0;
  std::byte* out = nullptr;        // read
  const std::byte* in = nullptr;   // write
  bool fua = false;
  bool may_trim = false;
};

// Calls the host's completion exactly once: with the result, or with
// operation_canceled if the request is dropped unfinished (its io_context
// was stopped and destroyed with the work still queued).
class CompletionOnce {
 public:
  explicit CompletionOnce(Disk::Completion done) : done_(std::move(done)) {}
  CompletionOnce(CompletionOnce&& other) noexcept : done_(std::exchange(other.done_, nullptr)) {}
  CompletionOnce& operator=(CompletionOnce&&) = delete;
  ~CompletionOnce() {
    if (done_) done_(std::make_error_code(std::errc::operation_canceled));
  }
  void operator()(std::error_code ec) {
    auto done = std::exchange(done_, nullptr);
    if (done) done(ec);
  }

 private:
  Disk::Completion done_;
};

// Largest piece of zeroes/trim sent in one device call, like an NBD client would.
constexpr uint64_t kMaxRangeChunk = 1u << 30;

block::Task<std::error_code> perform(std::shared_ptr<block::Device> device, Request r) {
  const block::Capabilities caps = device->capabilities();
  if (r.kind != Kind::read && r.kind != Kind::flush && caps.read_only) {
    co_return std::make_error_code(std::errc::operation_not_permitted);
  }
  if (r.kind == Kind::flush) co_return co_await device->flush();

  const uint64_t size = device->size();
  const uint64_t min_block = std::max<uint32_t>(caps.min_block, 1);
  if (r.offset > size || r.length > size - r.offset || r.offset % min_block || r.length % min_block) {
    co_return std::make_error_code(std::errc::invalid_argument);
  }
  if (r.length == 0) co_return std::error_code{};

  if (r.kind == Kind::zeroes || r.kind == Kind::trim) {
    const uint64_t step = std::max(min_block, kMaxRangeChunk / min_block * min_block);
    for (uint64_t done = 0; done < r.length;) {
      uint64_t n = std::min(step, r.length - done);
      std::error_code ec;
      if (r.kind == Kind::zeroes) {
        ec = co_await device->write_zeroes(r.offset + done, n,
                                           block::ZeroFlags{.fua = r.fua, .may_trim = r.may_trim});
      } else {
        ec = co_await device->trim(r.offset + done, n, block::WriteFlags{.fua = r.fua});
      }
      if (ec) co_return ec;
      done += n;
    }
    co_return std::error_code{};
  }

  // read / write, split to the device's largest payload.
  const uint64_t step = std::max(min_block, uint64_t{caps.max_block} / min_block * min_block);
  std::byte* base = r.kind == Kind::read ? r.out : const_cast<std::byte*>(r.in);
  const bool bounce = min_block > 1 && reinterpret_cast<uintptr_t>(base) % min_block != 0;
  block::AlignedBuffer staging;
  for (uint64_t done = 0; done < r.length;) {
    const uint64_t n = std::min(step, r.length - done);
    std::span<std::byte> piece{base + done, static_cast<size_t>(n)};
    if (bounce) {
      if (staging.capacity() < n) staging = block::AlignedBuffer(n);
      staging.resize(n);
    }
    std::error_code ec;
    if (r.kind == Kind::read) {
      ec = co_await device->read(r.offset + done, bounce ? staging.span() : piece);
      if (!ec && bounce) std::memcpy(piece.data(), staging.data(), n);
    } else {
      if (bounce) std::memcpy(staging.data(), piece.data(), n);
      std::span<const std::byte> data = bounce ? staging.span() : piece;
      ec = co_await device->write(r.offset + done, data, block::WriteFlags{.fua = r.fua});
    }
    if (ec) co_return ec;
    done += n;
  }
  co_return std::error_code{};
}

asio::awaitable<void> run_request(std::shared_ptr<block::Device> device, Request r, CompletionOnce done) {
  std::error_code ec;
  try {
    ec = co_await perform(std::move(device), r);
  } catch (const std::bad_alloc&) {
    ec = std::make_error_code(std::errc::not_enough_memory);
  }
  done(ec);
}

// Refusals complete inline: before start() and after stop() nothing may be
// running the engine's context to deliver them.
void submit(const std::shared_ptr<Disk::Impl>& disk, Request r, Disk::Completion done_fn) {
  CompletionOnce done(std::move(done_fn));
  std::errc refusal = std::errc::bad_file_descriptor;  // an empty handle
  if (disk) {
    server::EmbedCore& core = *disk->core;
    std::shared_lock lock(core.mutex);
    if (!core.io) {
      refusal = std::errc::operation_canceled;  // the engine is gone
    } else if (!core.accepting) {
      refusal = core.stopped ? std::errc::operation_canceled : std::errc::resource_unavailable_try_again;
    } else if (auto found = core.disks->find(disk->name); !found) {
      refusal = std::errc::no_such_device_or_address;
    } else {
      // Posted, not spawned here: co_spawn may start the request inline when
      // called on the engine's thread, and its completion must not run under
      // this lock (it may call stop()).
      asio::post(*core.io, [io = core.io, device = std::move(found->device), r, done = std::move(done)]() mutable {
        asio::co_spawn(*io, run_request(std::move(device), r, std::move(done)), asio::detached);
      });
      return;
    }
  }
  done(std::make_error_code(refusal));
}

std::error_code submit_and_wait(const std::shared_ptr<Disk::Impl>& disk, Request r) {
  if (disk) {
    std::shared_lock lock(disk->core->mutex);
    if (disk->core->io && disk->core->io->get_executor().running_in_this_thread()) {
      return std::make_error_code(std::errc::resource_deadlock_would_occur);
    }
  }
  std::promise<std::error_code> result;
  auto future = result.get_future();
  submit(disk, r, [&result](std::error_code ec) { result.set_value(ec); });
  return future.get();
}

Request rw(Kind kind, uint64_t offset, uint64_t length) {
  Request r;
  r.kind = kind;
  r.offset = offset;
  r.length = length;
  return r;
}

}  // namespace

Disk::Disk() = default;
Disk::~Disk() = default;
Disk::Disk(const Disk&) = default;
Disk& Disk::operator=(const Disk&) = default;
Disk::Disk(Disk&&) noexcept = default;
Disk& Disk::operator=(Disk&&) noexcept = default;
Disk::Disk(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

const std::string& Disk::name() const {
  static const std::string empty;
  return impl_ ? impl_->name : empty;
}
uint64_t Disk::size() const { return impl_ ? impl_->size : 0; }
bool Disk::read_only() const { return impl_ ? impl_->read_only : true; }

std::error_code Disk::read(uint64_t offset, std::span<std::byte> out) {
  Request r = rw(Kind::read, offset, out.size());
  r.out = out.data();
  return submit_and_wait(impl_, r);
}

std::error_code Disk::write(uint64_t offset, std::span<const std::byte> data, bool fua) {
  Request r = rw(Kind::write, offset, data.size());
  r.in = data.data();
  r.fua = fua;
  return submit_and_wait(impl_, r);
}

std::error_code Disk::write_zeroes(uint64_t offset, uint64_t length, bool may_trim) {
  Request r = rw(Kind::zeroes, offset, length);
  r.may_trim = may_trim;
  return submit_and_wait(impl_, r);
}

std::error_code Disk::trim(uint64_t offset, uint64_t length) {
  return submit_and_wait(impl_, rw(Kind::trim, offset, length));
}

std::error_code Disk::flush() { return submit_and_wait(impl_, rw(Kind::flush, 0, 0)); }

void Disk::async_read(uint64_t offset, std::span<std::byte> out, Completion done) {
  Request r = rw(Kind::read, offset, out.size());
  r.out = out.data();
  submit(impl_, r, std::move(done));
}

void Disk::async_write(uint64_t offset, std::span<const std::byte> data, Completion done, bool fua) {
  Request r = rw(Kind::write, offset, data.size());
  r.in = data.data();
  r.fua = fua;
  submit(impl_, r, std::move(done));
}

void Disk::async_write_zeroes(uint64_t offset, uint64_t length, Completion done, bool may_trim) {
  Request r = rw(Kind::zeroes, offset, length);
  r.may_trim = may_trim;
  submit(impl_, r, std::move(done));
}

void Disk::async_trim(uint64_t offset, uint64_t length, Completion done) {
  submit(impl_, rw(Kind::trim, offset, length), std::move(done));
}

void Disk::async_flush(Completion done) { submit(impl_, rw(Kind::flush, 0, 0), std::move(done)); }

// Engine needs to make handles; the constructor is private to keep them
// tied to an engine.
std::shared_ptr<Disk::Impl> make_disk_impl(std::shared_ptr<server::EmbedCore> core, std::string name,
                                           uint64_t size, bool read_only) {
  auto impl = std::make_shared<Disk::Impl>();
  impl->core = std::move(core);
  impl->name = std::move(name);
  impl->size = size;
  impl->read_only = read_only;
  return impl;
}

}  // namespace fleece
