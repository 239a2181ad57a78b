#include "snapshot/commit_job.hpp"

#include "block/buffer.hpp"
#include "util/errors.hpp"
#include "util/log.hpp"

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace fleece::snapshot {

using block::Task;

namespace {

std::error_code fail(std::string* why, std::error_code ec, std::string message) {
  if (why) *why = std::move(message);
  return ec;
}

uint64_t align_down(uint64_t v, uint64_t a) { return v / a * a; }
uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

struct Run {
  uint64_t start = 0, length = 0;
  bool zero = false;
};

}  // namespace

Result<std::shared_ptr<CommitJob>> CommitJob::create(boost::asio::any_io_executor executor,
                                                     std::shared_ptr<cow::BackingChain> chain,
                                                     CommitJobOptions o, BlockJobEvents events,
                                                     std::string* why) {
  const auto layers = chain->layers();
  std::optional<std::size_t> t = o.top.empty() ? std::optional<std::size_t>(0) : chain->find(o.top);
  if (!t)
    return fail(why, std::make_error_code(std::errc::invalid_argument),
                fmt::format("Top image file {} not found in the backing chain of {}", o.top,
                            o.device));
  if (*t == 0)
    return fail(why, std::make_error_code(std::errc::operation_not_supported),
                fmt::format("Top image as the active layer is currently unsupported: take a "
                            "snapshot of {} first (blockdev-snapshot-sync), then commit {}",
                            o.device, layers.front().path));
  std::optional<std::size_t> b =
      o.base.empty() ? std::optional<std::size_t>(layers.size() - 1) : chain->find(o.base);
  if (!b)
    return fail(why, std::make_error_code(std::errc::invalid_argument),
                fmt::format("Base image file {} not found in the backing chain of {}", o.base,
                            o.device));
  if (*b == *t)
    return fail(why, std::make_error_code(std::errc::invalid_argument),
                fmt::format("Top and base are the same image ({})", layers[*t].path));
  if (*b < *t)
    return fail(why, std::make_error_code(std::errc::invalid_argument),
                fmt::format("Base {} is not below top {} in the backing chain of {}",
                            layers[*b].path, layers[*t].path, o.device));
  if (o.job_id.empty())
    return fail(why, std::make_error_code(std::errc::invalid_argument), "a job id is required");
  if (o.step == 0) o.step = 512 * 1024;
  if (auto owner = chain->claim_job(o.job_id))
    return fail(why, std::make_error_code(std::errc::device_or_resource_busy),
                fmt::format("Device {} is busy: block job '{}' is running on its backing chain",
                            o.device, *owner));
  std::string top = layers[*t].path, base = layers[*b].path;
  return std::shared_ptr<CommitJob>(
      new CommitJob(std::move(executor), std::move(chain), std::move(o), std::move(events), top,
                    base));
}

CommitJob::CommitJob(boost::asio::any_io_executor executor,
                     std::shared_ptr<cow::BackingChain> chain, CommitJobOptions options,
                     BlockJobEvents events, std::string top, std::string base)
    : BlockJob(std::move(executor), options.job_id, "commit", options.device, options.speed,
               std::move(events)),
      chain_(std::move(chain)),
      options_(std::move(options)),
      top_(std::move(top)),
      base_(std::move(base)) {}

CommitJob::~CommitJob() { chain_->release_job(options_.job_id); }

Task<std::error_code> CommitJob::run() {
  // Whatever happens, the chain is free for the next job when this ends.
  struct Release {
    CommitJob* job;
    ~Release() { job->chain_->release_job(job->options_.job_id); }
  } release{this};

  auto ec = co_await open_base_writable();
  if (!ec) {
    const auto layers = chain_->layers();
    const auto t = chain_->index_of_path(top_), b = chain_->index_of_path(base_);
    if (!t || !b || *b <= *t) {
      report_error("read", fmt::format("{}: the backing chain changed under the job", top_));
      ec = std::make_error_code(std::errc::invalid_argument);
    } else {
      auto top = layers[*t].device;
      auto base = layers[*b].device;
      const uint64_t len = top->size();
      set_progress(0, len);
      ec = co_await copy(top, base, uint32_t(*b - *t), len);
    }
  }
  if (!ec) ec = co_await relink();
  co_await close_base();
  co_return ec;
}

Task<std::error_code> CommitJob::open_base_writable() {
  const auto layers = chain_->layers();
  const auto t = chain_->index_of_path(top_), b = chain_->index_of_path(base_);
  if (!t || !b) {
    report_error("write", fmt::format("{}: no longer in the backing chain", base_));
    co_return std::make_error_code(std::errc::invalid_argument);
  }
  const cow::ChainLayer& base = layers[*b];
  const uint64_t need = layers[*t].device->size();
  if (base.device->size() < need) {
    if (base.qcow2) {
      report_error("write", fmt::format("{}: base ({} bytes) is smaller than top ({} bytes); grow "
                                        "it with qemu-img resize first",
                                        base_, base.device->size(), need));
      co_return make_error_code(Errc::unsupported_feature);
    }
    // A raw base grows like QEMU's commit grows it; the reopen below sees
    // the new size.
    if (::truncate(base_.c_str(), off_t(need)) != 0) {
      const int e = errno;
      report_error("write", fmt::format("{}: cannot grow base to {} bytes: {}", base_, need,
                                        std::strerror(e)));
      co_return std::error_code(e, std::generic_category());
    }
  }
  std::string why;
  auto rw = co_await cow::open_image(base_, base.format, false, chain_->options().direct, &why);
  if (!rw) {
    report_error("write", why);
    co_return rw.error();
  }
  if (!chain_->replace_device(base_, *rw, false)) {
    report_error("write", fmt::format("{}: no longer in the backing chain", base_));
    co_return std::make_error_code(std::errc::invalid_argument);
  }
  base_writable_ = true;
  co_return std::error_code{};
}

Task<std::error_code> CommitJob::copy(std::shared_ptr<block::Device> top,
                                      std::shared_ptr<block::Device> base, uint32_t span,
                                      uint64_t len) {
  const uint64_t align = std::max<uint64_t>(
      {1, top->capabilities().min_block, base->capabilities().min_block});
  const uint64_t step = align_up(options_.step, align);
  block::AlignedBuffer buf(step + 2 * align);
  uint64_t pos = 0, done = 0;
  std::vector<block::Extent> ext;
  std::vector<Run> runs;
  while (pos < len) {
    // Sleep first, even unlimited, so that pause and cancel are noticed.
    if (!co_await pace(done)) co_return std::make_error_code(std::errc::operation_canceled);
    done = 0;
    const uint64_t n = std::min(step, len - pos);
    ext.clear();
    if (auto ec = co_await top->block_status(pos, n, ext)) {
      report_error("read", fmt::format("{}: block status at {}: {}", top_, pos, ec.message()));
      co_return ec;
    }
    // Runs to copy: allocated at depth 1..span of top's view (top itself
    // down to the layer just above base).
    runs.clear();
    uint64_t at = pos;
    for (const auto& e : ext) {
      if (at >= pos + n || e.length == 0) break;
      const uint64_t l = std::min(e.length, pos + n - at);
      if (e.depth >= 1 && e.depth <= span) {
        const bool zero = (e.flags & block::kExtentZero) != 0;
        if (!runs.empty() && runs.back().zero == zero &&
            runs.back().start + runs.back().length == at)
          runs.back().length += l;
        else
          runs.push_back({at, l, zero});
      }
      at += l;
    }
    if (at == pos) {
      report_error("read", fmt::format("{}: empty block status at {}", top_, pos));
      co_return std::make_error_code(std::errc::io_error);
    }
    for (const Run& r : runs) {
      if (r.zero) {
        if (auto ec = co_await base->write_zeroes(r.start, r.length, {.may_trim = true})) {
          report_error("write", fmt::format("{}: writing zeroes at {}: {}", base_, r.start,
                                            ec.message()));
          co_return ec;
        }
      } else {
        // Widened to the I/O alignment: the extra bytes are base's own
        // (top's view of them comes from base), so writing them is a no-op.
        const uint64_t s = align_down(r.start, align);
        const uint64_t e = std::min(align_up(r.start + r.length, align), len);
        auto view = buf.span().first(e - s);
        if (auto ec = co_await top->read(s, view)) {
          report_error("read", fmt::format("{}: reading {} bytes at {}: {}", top_, e - s, s,
                                           ec.message()));
          co_return ec;
        }
        if (auto ec = co_await base->write(s, view, {})) {
          report_error("write", fmt::format("{}: writing {} bytes at {}: {}", base_, e - s, s,
                                            ec.message()));
          co_return ec;
        }
      }
      done += r.length;
    }
    pos = at;
    set_progress(pos, len);
  }
  if (auto ec = co_await base->flush()) {
    report_error("write", fmt::format("{}: flush: {}", base_, ec.message()));
    co_return ec;
  }
  co_return std::error_code{};
}

Task<std::error_code> CommitJob::relink() {
  const auto layers = chain_->layers();
  const auto t = chain_->index_of_path(top_), b = chain_->index_of_path(base_);
  if (!t || !b || *t == 0) {
    report_error("write", fmt::format("{}: the backing chain changed under the job", top_));
    co_return std::make_error_code(std::errc::invalid_argument);
  }
  const cow::ChainLayer overlay = layers[*t - 1];
  const cow::ChainLayer& base = layers[*b];
  const std::string name = options_.backing_file.empty()
                               ? cow::backing_name_for(overlay.path, base.path)
                               : options_.backing_file;
  // The header names base before anything reads base through the overlay,
  // so a crash from here on leaves a chain that qemu-img opens the same.
  std::shared_ptr<cow::Qcow2Image> writer = overlay.qcow2;
  if (overlay.read_only) {
    std::string why;
    auto rw = co_await cow::open_image(overlay.path, "qcow2", false, chain_->options().direct,
                                       &why);
    if (!rw) {
      report_error("write", why);
      co_return rw.error();
    }
    writer = rw->qcow2;
  }
  if (auto ec = co_await writer->set_backing_file(name, base.format)) {
    report_error("write", fmt::format("{}: rewriting the backing file link: {}", overlay.path,
                                      ec.message()));
    co_return ec;
  }
  // set_backing_file() made the link durable: no flush of the overlay, whose
  // dirty data is the guest's business.
  if (auto ec = chain_->drop_between(overlay.path, base_, name, base.format)) {
    report_error("write", fmt::format("{}: the backing chain changed under the job", top_));
    co_return ec;
  }
  FLEECE_LOG_INFO("job", "{}: {} now backed by {}; images in between left the chain", id(),
                  overlay.path, base_);
  co_return std::error_code{};
}

Task<void> CommitJob::close_base() {
  if (!base_writable_) co_return;
  base_writable_ = false;
  const auto b = chain_->index_of_path(base_);
  if (!b) co_return;
  const auto layers = chain_->layers();
  const cow::ChainLayer base = layers[*b];
  if (auto ec = co_await base.device->flush())
    FLEECE_LOG_WARN("job", "{}: flushing base {}: {}", id(), base_, ec.message());
  std::string why;
  auto ro = co_await cow::open_image(base_, base.format, true, chain_->options().direct, &why);
  if (!ro) {
    FLEECE_LOG_WARN("job", "{}: base {} stays open read-write: {}", id(), base_, why);
    co_return;
  }
  chain_->replace_device(base_, *ro, true);
}

}  // namespace fleece::snapshot
