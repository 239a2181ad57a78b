#include "block/uring_service.hpp"

#include <boost/asio/post.hpp>

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

namespace fleece::block::detail {

namespace {
constexpr unsigned kSqEntries = 256;
constexpr unsigned kCqEntries = 4096;  // deep queues: many connections x many requests
}  // namespace

UringService::UringService(boost::asio::io_context& io) : service(io), io_(&io) {
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE;
  params.cq_entries = kCqEntries;
  if (int r = io_uring_queue_init_params(kSqEntries, &ring_, &params); r < 0) {
    init_error_ = std::error_code(-r, std::generic_category());
    return;
  }
  int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) {
    init_error_ = std::error_code(errno, std::generic_category());
    io_uring_queue_exit(&ring_);
    return;
  }
  if (int r = io_uring_register_eventfd(&ring_, efd); r < 0) {
    init_error_ = std::error_code(-r, std::generic_category());
    ::close(efd);
    io_uring_queue_exit(&ring_);
    return;
  }
  try {
    eventfd_.emplace(*io_, efd);  // owns efd from here on
  } catch (...) {
    ::close(efd);
    io_uring_queue_exit(&ring_);
    throw;
  }
  ok_ = true;
}

UringService::~UringService() {
  eventfd_.reset();
  if (ok_) io_uring_queue_exit(&ring_);
}

io_uring_sqe* UringService::next_sqe_locked() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (!sqe) {  // the SQ is full within one turn of the loop: submit now
    submit_locked();
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

void UringService::after_enqueue_locked() {
  ++in_flight_;
  ++unsubmitted_;
  if (!flush_posted_) {
    flush_posted_ = true;
    boost::asio::post(*io_, [this] { flush(); });
  }
}

void UringService::fail_later(OpBase* op, int res) {
  boost::asio::post(*io_, [op, res] { op->complete(op, res, true); });
}

void UringService::submit_locked() {
  while (unsubmitted_ > 0) {
    int r = io_uring_submit(&ring_);
    if (r >= 0) {
      unsubmitted_ -= std::min<unsigned>(unsubmitted_, static_cast<unsigned>(r));
      if (r == 0) break;
      continue;
    }
    if (r == -EINTR) continue;
    // EAGAIN/EBUSY: the kernel is short of resources or the CQ overflowed;
    // reaping frees room, so the next flush retries.
    break;
  }
}

std::size_t UringService::reap_locked(std::array<Completion, kReapBatch>& out) {
  std::size_t n = 0;
  unsigned head;
  io_uring_cqe* cqe;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    if (n == out.size()) break;
    out[n++] = {static_cast<OpBase*>(io_uring_cqe_get_data(cqe)), cqe->res};
  }
  io_uring_cq_advance(&ring_, static_cast<unsigned>(n));
  in_flight_ -= n;
  return n;
}

void UringService::arm_locked() {
  if (wait_armed_ || in_flight_ == 0 || shut_down_) return;
  wait_armed_ = true;
  eventfd_->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                       [this](const boost::system::error_code& ec) { on_eventfd(ec); });
}

void UringService::reap_and_run() {
  std::array<Completion, kReapBatch> done;
  for (;;) {
    std::size_t n;
    {
      std::lock_guard lock(mutex_);
      n = reap_locked(done);
      if (n < done.size()) {
        if (unsubmitted_ > 0 && !flush_posted_) {  // an earlier submit was refused
          flush_posted_ = true;
          boost::asio::post(*io_, [this] { flush(); });
        }
        arm_locked();
      }
    }
    for (std::size_t i = 0; i < n; ++i) done[i].op->complete(done[i].op, done[i].res, true);
    if (n < done.size()) return;
  }
}

void UringService::flush() {
  {
    std::lock_guard lock(mutex_);
    flush_posted_ = false;
    submit_locked();
  }
  // Buffered reads that hit the page cache completed inside io_uring_enter:
  // run them now rather than after an eventfd wake-up.
  reap_and_run();
}

void UringService::on_eventfd(const boost::system::error_code& ec) {
  {
    std::lock_guard lock(mutex_);
    wait_armed_ = false;
  }
  if (ec) return;  // operation_aborted at shutdown
  uint64_t count;
  [[maybe_unused]] ssize_t r = ::read(eventfd_->native_handle(), &count, sizeof count);
  reap_and_run();
}

void UringService::shutdown() {
  if (!ok_) return;
  std::array<Completion, kReapBatch> done;
  std::unique_lock lock(mutex_);
  shut_down_ = true;
  submit_locked();
  while (in_flight_ > 0) {
    int r = io_uring_submit_and_wait(&ring_, 1);
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) break;  // ring unusable: give up
    std::size_t n = reap_locked(done);
    lock.unlock();
    for (std::size_t i = 0; i < n; ++i) done[i].op->complete(done[i].op, done[i].res, false);
    lock.lock();
  }
  eventfd_.reset();
}

}  // namespace fleece::block::detail
