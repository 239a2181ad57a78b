#include "cow/cbw_filter.hpp"

#include "cow/unit_bits.hpp"

#include "block/buffer.hpp"
#include "util/errors.hpp"
#include "util/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <cassert>
#include <set>

namespace fleece::cow {

namespace asio = boost::asio;
using block::Task;

namespace {
constexpr bool kShared = true;
constexpr bool kExclusive = false;

// Lets the other coroutines on this thread run between slices of a long
// walk, so that no guest write waits for the whole of it.
Task<void> yield() { co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable); }
}  // namespace

struct CbwFilter::Snapshot {
  SnapshotId id = 0;
  std::shared_ptr<ClusterStore> store;
  SnapshotPolicy policy;
  UnitBits needs;
  UnitBits holds;
  bool broken = false;
  std::error_code broken_reason;
  bool exported = true;
  uint64_t reserved_bytes = 0;  // copies in flight, counted against max_store_bytes
  uint64_t preserved_bytes = 0;
  uint64_t copies = 0;
  uint64_t zero_marks = 0;
  uint64_t freed_clusters = 0;
};

struct CbwFilter::BackgroundCopy {
  std::shared_ptr<CopyOutcome> outcome;
  std::shared_ptr<CbwFilter> self;  // the filter outlives the copies
};

// A range of clusters copied by several workers at once: they take the
// next cluster in turn; the last to leave reports the first error.
struct CbwFilter::RangeCopy {
  std::shared_ptr<CopyOutcome> outcome;
  std::shared_ptr<CbwFilter> self;
  uint64_t last = 0;
  std::mutex mutex;
  uint64_t next = 0;
  unsigned running = 0;
  std::error_code error;
};

struct CbwFilter::CopyPlan {
  std::shared_ptr<Snapshot> target;  // St_m: receives the old data
  std::shared_ptr<Snapshot> newest;  // St_n: to be marked zero (it must not fall through)
};

// The result of copies a writer spawned so that it can stop waiting for
// them (cbw-timeout) while they run on. wait() supports per-operation
// cancellation, which is how the timer in a `||` abandons it.
class CbwFilter::CopyOutcome : public std::enable_shared_from_this<CopyOutcome> {
 public:
  void complete(std::error_code ec) {
    Resumer r;
    {
      std::lock_guard lk(mutex_);
      done_ = true;
      result_ = ec;
      r = std::move(waiter_);
      waiter_ = Resumer();
    }
    if (r) r.resume();
  }

  std::optional<std::error_code> result() const {
    std::lock_guard lk(mutex_);
    if (!done_) return std::nullopt;
    return result_;
  }

  Task<void> wait() {
    // The initiation is a named variable: GCC 12 destroys a temporary inside
    // a co_await expression twice, which here would drop `self` twice.
    auto initiation = [self = shared_from_this()](auto handler) {
          auto slot = asio::get_associated_cancellation_slot(handler);
          Resumer r(std::move(handler));
          std::unique_lock lk(self->mutex_);
          if (self->done_) {
            lk.unlock();
            r.resume();
            return;
          }
          if (slot.is_connected()) {
            slot.assign([self](asio::cancellation_type) { self->wake_waiter(); });
          }
          self->waiter_ = std::move(r);
        };
    co_await asio::async_initiate<const asio::use_awaitable_t<>, void()>(initiation,
                                                                        asio::use_awaitable);
  }

 private:
  void wake_waiter() {
    Resumer r;
    {
      std::lock_guard lk(mutex_);
      r = std::move(waiter_);
      waiter_ = Resumer();
    }
    if (r) r.resume();
  }

  mutable std::mutex mutex_;
  bool done_ = false;
  std::error_code result_;
  Resumer waiter_;
};

CbwFilter::CbwFilter(std::shared_ptr<block::Device> disk, CbwFilterOptions options)
    : disk_(std::move(disk)), options_(std::move(options)), size_(disk_->size()) {}

CbwFilter::~CbwFilter() = default;

uint64_t CbwFilter::size() const { return size_; }

block::Capabilities CbwFilter::capabilities() const { return disk_->capabilities(); }

// ---------------------------------------------------------------------------
// Helpers (mutex_ held).

std::optional<size_t> CbwFilter::index_of(const Snapshot* s) const {
  for (size_t i = 0; i < chain_.size(); ++i)
    if (chain_[i].get() == s) return i;
  return std::nullopt;
}

std::shared_ptr<CbwFilter::Snapshot> CbwFilter::find_exported(SnapshotId id) const {
  for (auto& s : chain_)
    if (s->id == id && s->exported) return s;
  return nullptr;
}

bool CbwFilter::needy(size_t j, uint64_t cluster) const {
  const Snapshot& s = *chain_[j];
  return !s.broken && s.needs[cluster];
}

std::optional<size_t> CbwFilter::first_holder(size_t from, uint64_t cluster) const {
  for (size_t j = from; j < chain_.size(); ++j)
    if (chain_[j]->holds[cluster]) return j;
  return std::nullopt;
}

// Does some snapshot h <= k still read cluster from St_k?
bool CbwFilter::store_has_readers(size_t k, uint64_t cluster) const {
  for (size_t h = k + 1; h-- > 0;) {
    if (h < k && chain_[h]->holds[cluster]) return false;  // h and older stop at St_h
    if (needy(h, cluster)) return true;
  }
  return false;
}

// Snapshots that would read cluster from the live disk, newest first.
std::vector<size_t> CbwFilter::readers_from_disk(uint64_t cluster) const {
  std::vector<size_t> out;
  for (size_t j = chain_.size(); j-- > 0;) {
    if (chain_[j]->holds[cluster]) break;
    if (needy(j, cluster)) out.push_back(j);
  }
  return out;
}

bool CbwFilter::all_newest_hold(uint64_t first, uint64_t last) const {
  const auto& holds = chain_.back()->holds;
  for (uint64_t c = first; c <= last; ++c)
    if (!holds[c]) return false;
  return true;
}

std::chrono::milliseconds CbwFilter::write_timeout() const {
  std::chrono::milliseconds t{0};
  for (auto& s : chain_) {
    if (s->broken || !s->exported || s->policy.cbw_timeout.count() <= 0) continue;
    if (t.count() == 0 || s->policy.cbw_timeout < t) t = s->policy.cbw_timeout;
  }
  return t;
}

void CbwFilter::break_snapshots(const std::vector<size_t>& which, std::error_code why,
                                std::vector<std::pair<SnapshotId, std::error_code>>& fired) {
  for (size_t j : which) {
    Snapshot& s = *chain_[j];
    if (s.broken) continue;
    s.broken = true;
    s.broken_reason = why;
    fired.emplace_back(s.id, why);
  }
}

void CbwFilter::fire_broken(const std::vector<std::pair<SnapshotId, std::error_code>>& fired) {
  if (fired.empty()) return;
  BrokenCallback cb;
  {
    std::lock_guard lk(mutex_);
    cb = on_broken_;
  }
  for (auto& [id, why] : fired) {
    FLEECE_LOG_WARN("cbw", "snapshot {} broken: {}", id, why.message());
    if (cb) cb(id, why);
  }
}

// ---------------------------------------------------------------------------
// Guest path.

// Guest reads need nothing from the filter: handing back the disk's own
// coroutine saves a frame per request on the hottest path.
Task<std::error_code> CbwFilter::read(uint64_t offset, std::span<std::byte> out) {
  return disk_->read(offset, out);
}

Task<std::error_code> CbwFilter::write(uint64_t offset, std::span<const std::byte> data,
                                       block::WriteFlags flags) {
  WriteGate::Ticket ticket;
  if (auto ec = co_await copy_then_enter(offset, data.size(), ticket)) co_return ec;
  co_return co_await disk_->write(offset, data, flags);
}

Task<std::error_code> CbwFilter::write_zeroes(uint64_t offset, uint64_t length,
                                              block::ZeroFlags flags) {
  WriteGate::Ticket ticket;
  if (auto ec = co_await copy_then_enter(offset, length, ticket)) co_return ec;
  co_return co_await disk_->write_zeroes(offset, length, flags);
}

Task<std::error_code> CbwFilter::trim(uint64_t offset, uint64_t length, block::WriteFlags flags) {
  WriteGate::Ticket ticket;
  if (auto ec = co_await copy_then_enter(offset, length, ticket)) co_return ec;
  co_return co_await disk_->trim(offset, length, flags);
}

// The copies run outside the gate; only the write to D holds a Ticket. A
// snapshot started meanwhile (a new epoch) may need copies of its own, and
// the write, not having touched D, belongs after its point in time: copy
// again for the chain as it is now. With nothing to copy (no snapshot, or
// steady state) the Ticket is simply taken first: no snapshot starts while
// it is held, so the chain cannot grow a need for copies under it.
Task<std::error_code> CbwFilter::copy_then_enter(uint64_t offset, uint64_t length,
                                                 WriteGate::Ticket& ticket) {
  for (;;) {
    uint64_t epoch = 0;
    ticket = gate_.try_enter_open(epoch);
    if (!ticket.valid()) {
      co_await gate_.wait_open();
      continue;
    }
    if (!needs_copies(offset, length)) co_return std::error_code{};
    ticket.reset();
    if (auto ec = co_await before_write(offset, length)) co_return ec;
    ticket = gate_.try_enter(epoch);
    if (ticket.valid()) co_return std::error_code{};
  }
}

bool CbwFilter::needs_copies(uint64_t offset, uint64_t length) const {
  if (length == 0 || offset >= size_) return false;
  std::lock_guard lk(mutex_);
  if (chain_.empty()) return false;
  const uint64_t last = std::min(offset + length - 1, size_ - 1) / cluster_size_;
  return !all_newest_hold(offset / cluster_size_, last);
}

Task<std::error_code> CbwFilter::flush() {
  auto ec = co_await disk_->flush();
  std::vector<std::shared_ptr<ClusterStore>> stores;
  {
    std::lock_guard lk(mutex_);
    for (auto& s : chain_) stores.push_back(s->store);
  }
  // A store that cannot flush costs a backup, never the guest's flush.
  for (auto& st : stores)
    if (auto sec = co_await st->flush())
      FLEECE_LOG_WARN("cbw", "flush of store {} failed: {}", st->path(), sec.message());
  co_return ec;
}

Task<std::error_code> CbwFilter::cache(uint64_t offset, uint64_t length) {
  co_return co_await disk_->cache(offset, length);
}

Task<std::error_code> CbwFilter::block_status(uint64_t offset, uint64_t length,
                                              std::vector<block::Extent>& out) {
  co_return co_await disk_->block_status(offset, length, out);
}

Task<std::error_code> CbwFilter::before_write(uint64_t offset, uint64_t length) {
  if (length == 0 || offset >= size_) co_return std::error_code{};
  uint64_t first = 0, last = 0;
  std::chrono::milliseconds timeout{0};
  {
    std::lock_guard lk(mutex_);
    if (chain_.empty()) co_return std::error_code{};
    first = offset / cluster_size_;
    last = std::min(offset + length - 1, size_ - 1) / cluster_size_;
    if (all_newest_hold(first, last)) co_return std::error_code{};  // steady state
    timeout = write_timeout();
  }
  if (timeout.count() == 0) co_return co_await preserve_range(first, last);

  // Bounded wait: the copies run on in their own coroutine (keeping the
  // filter alive) while the writer may give up.
  auto outcome = std::make_shared<CopyOutcome>();
  auto ex = co_await asio::this_coro::executor;
  // The outcome and the filter reach the copy task in one heap object it owns.
  auto* hand_over = new BackgroundCopy{outcome, weak_from_this().lock()};
  asio::co_spawn(ex, copy_in_background(hand_over, first, last), asio::detached);
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(ex, timeout);
  co_await (outcome->wait() || timer.async_wait(asio::as_tuple(asio::use_awaitable)));
  if (auto done = outcome->result()) co_return *done;
  co_return give_up_on_copies(first, last, make_error_code(Errc::cbw_timeout));
}

Task<void> CbwFilter::copy_in_background(BackgroundCopy* hand_over, uint64_t first,
                                          uint64_t last) {
  std::unique_ptr<BackgroundCopy> job(hand_over);
  auto ec = co_await preserve_range(first, last);
  job->outcome->complete(ec);
}

std::error_code CbwFilter::give_up_on_copies(uint64_t first, uint64_t last, std::error_code why) {
  std::vector<std::pair<SnapshotId, std::error_code>> fired;
  bool fail_write = false;
  {
    std::lock_guard lk(mutex_);
    if (chain_.empty()) return {};
    std::set<size_t> affected;
    for (uint64_t c = first; c <= last; ++c) {
      if (chain_.back()->holds[c]) continue;
      for (size_t j : readers_from_disk(c)) affected.insert(j);
    }
    for (size_t j : affected)
      if (chain_[j]->policy.on_error == OnCbwError::break_guest_write) fail_write = true;
    if (!fail_write)
      break_snapshots(std::vector<size_t>(affected.begin(), affected.end()), why, fired);
  }
  fire_broken(fired);
  if (fail_write) {
    FLEECE_LOG_WARN("cbw", "guest write to clusters {}..{} failed: {}", first, last,
                    why.message());
    return std::make_error_code(std::errc::io_error);
  }
  return {};
}

Task<std::error_code> CbwFilter::preserve_range(uint64_t first, uint64_t last) {
  if (first == last) co_return co_await preserve_cluster(first);
  // A write over many copy units (1 MiB over 4 KiB ones: 256) copies them
  // side by side: each copy is a read and a write that would otherwise wait
  // for the one before. Each cluster still has its own lock, taken alone.
  constexpr uint64_t kWorkers = 8;
  auto range = std::make_shared<RangeCopy>();
  range->outcome = std::make_shared<CopyOutcome>();
  range->self = shared_from_this();
  range->last = last;
  range->next = first;
  range->running = unsigned(std::min(kWorkers, last - first + 1));
  auto ex = co_await asio::this_coro::executor;
  for (unsigned i = range->running; i > 0; --i)
    asio::co_spawn(ex, copy_worker(new std::shared_ptr<RangeCopy>(range)), asio::detached);
  co_await range->outcome->wait();
  co_return *range->outcome->result();
}

Task<void> CbwFilter::copy_worker(std::shared_ptr<RangeCopy>* hand_over) {
  // Handed over as a raw pointer: GCC 12 may lose a by-value class
  // parameter of a coroutine.
  const std::shared_ptr<RangeCopy> range = *std::unique_ptr<std::shared_ptr<RangeCopy>>(hand_over);
  for (;;) {
    uint64_t c;
    {
      std::lock_guard lk(range->mutex);
      if (range->error || range->next > range->last) break;
      c = range->next++;
    }
    auto ec = co_await preserve_cluster(c);
    if (ec) {
      std::lock_guard lk(range->mutex);
      if (!range->error) range->error = ec;
    }
  }
  std::error_code result;
  {
    std::lock_guard lk(range->mutex);
    if (--range->running > 0) co_return;
    result = range->error;
  }
  range->outcome->complete(result);
}

Task<std::error_code> CbwFilter::preserve_cluster(uint64_t cluster) {
  // The exclusive lock waits for frozen reads of this cluster and keeps
  // every other writer, discard and store removal off it until the holds
  // bits say where the old data lives.
  auto guard = co_await locks_.lock(cluster, cluster, kExclusive);
  for (int attempt = 0; attempt < 16; ++attempt) {
    CopyPlan plan;
    {
      std::lock_guard lk(mutex_);
      const size_t n = chain_.size();
      if (n == 0 || cluster >= clusters_ || chain_[n - 1]->holds[cluster])
        co_return std::error_code{};
      std::optional<size_t> m;
      for (size_t j = n; j-- > 0;) {
        if (chain_[j]->holds[cluster]) break;
        if (!m && needy(j, cluster)) m = j;
      }
      if (m) plan.target = chain_[*m];
      if (!m || *m < n - 1) plan.newest = chain_[n - 1];
    }

    if (plan.target) {
      if (auto ec = co_await copy_cluster(plan.target, cluster)) {
        std::vector<std::pair<SnapshotId, std::error_code>> fired;
        bool fail_write = false;
        {
          std::lock_guard lk(mutex_);
          auto affected = readers_from_disk(cluster);
          for (size_t j : affected)
            if (chain_[j]->policy.on_error == OnCbwError::break_guest_write) fail_write = true;
          if (!fail_write) break_snapshots(affected, ec, fired);
        }
        fire_broken(fired);
        if (fail_write) {
          FLEECE_LOG_WARN("cbw", "copy of cluster {} failed ({}); failing the guest write",
                          cluster, ec.message());
          co_return std::make_error_code(std::errc::io_error);
        }
        continue;  // the broken snapshots need nothing now: plan again
      }
      std::lock_guard lk(mutex_);
      // A store removed meanwhile took the copy with it: plan again.
      if (!index_of(plan.target.get())) continue;
      plan.target->holds.set(cluster);
    }

    if (plan.newest) {
      auto ec = co_await plan.newest->store->mark_zero(cluster);
      std::lock_guard lk(mutex_);
      if (ec) {
        // Nobody needs C from St_n: only its qcow2 view is affected. The
        // next writer of C retries.
        FLEECE_LOG_WARN("cbw", "marking cluster {} zero in {} failed: {}", cluster,
                        plan.newest->store->path(), ec.message());
        co_return std::error_code{};
      }
      if (!index_of(plan.newest.get())) continue;
      plan.newest->holds.set(cluster);
      ++plan.newest->zero_marks;
    }
    co_return std::error_code{};
  }
  FLEECE_LOG_ERROR("cbw", "cluster {}: the chain kept changing under the copy", cluster);
  co_return std::make_error_code(std::errc::io_error);
}

Task<std::error_code> CbwFilter::copy_cluster(const std::shared_ptr<Snapshot>& snap,
                                              uint64_t cluster) {
  ClusterStore& store = *snap->store;
  const uint32_t bytes = store.cluster_bytes(cluster);
  const uint64_t offset = cluster * store.cluster_size();

  // Holes are cheap: a cluster D reports as zeroes is recorded, not read.
  std::vector<block::Extent> extents;
  if (!co_await disk_->block_status(offset, bytes, extents)) {
    uint64_t covered = 0;
    for (auto& e : extents) {
      if (!(e.flags & block::kExtentZero)) break;
      covered += e.length;
      if (covered >= bytes) break;
    }
    if (covered >= bytes) {
      auto ec = co_await store.mark_zero(cluster);
      if (!ec) {
        std::lock_guard lk(mutex_);
        ++snap->zero_marks;
      }
      co_return ec;
    }
  }

  {
    std::lock_guard lk(mutex_);
    const uint64_t limit = snap->policy.max_store_bytes;
    if (limit && store.stored_bytes() + snap->reserved_bytes + bytes > limit)
      co_return make_error_code(Errc::store_full);
    snap->reserved_bytes += bytes;
  }
  block::AlignedBuffer buffer(bytes);
  auto ec = co_await disk_->read(offset, buffer.span());
  if (!ec) ec = co_await store.write_cluster(cluster, buffer.span());
  std::lock_guard lk(mutex_);
  snap->reserved_bytes -= bytes;
  if (!ec) {
    snap->preserved_bytes += bytes;
    ++snap->copies;
  }
  co_return ec;
}

// ---------------------------------------------------------------------------
// Snapshot lifecycle.

bool CbwFilter::empty_store(const ClusterStore& store) { return store.all_absent(); }

CbwFilter::Prepared CbwFilter::prepare(std::shared_ptr<ClusterStore> store, SnapshotPolicy policy) {
  Prepared p;
  p.snapshot = std::make_shared<Snapshot>();
  if (store) {
    p.snapshot->needs.assign(store->cluster_count(), true);
    p.snapshot->holds.assign(store->cluster_count(), false);
  }
  p.snapshot->store = std::move(store);
  p.snapshot->policy = policy;
  return p;
}

Task<Result<SnapshotId>> CbwFilter::add_snapshot(std::shared_ptr<ClusterStore> store,
                                                 SnapshotPolicy policy) {
  auto prepared = prepare(std::move(store), policy);  // named: see add_snapshot(Prepared&&)
  co_return co_await add_snapshot(std::move(prepared));
}

Task<Result<SnapshotId>> CbwFilter::add_snapshot(Prepared&& prepared) {
  auto snap = std::move(prepared.snapshot);
  assert(gate_.closed() && "add_snapshot needs the write gate closed");
  if (!snap) co_return std::make_error_code(std::errc::invalid_argument);
  const std::shared_ptr<ClusterStore>& store = snap->store;
  if (!store || store->size() != size_ || store->cluster_size() == 0)
    co_return std::make_error_code(std::errc::invalid_argument);
  auto admin = co_await admin_.lock(0, 0, kExclusive);
  const uint32_t cs = store->cluster_size();
  const uint64_t count = store->cluster_count();
  // The full check is O(clusters) and runs before the gate closes
  // (FleeceGroup::start); here, with the guest held, only what is O(1).
  if (store->stored_bytes() != 0 || snap->needs.size() != count)
    co_return std::make_error_code(std::errc::invalid_argument);
  std::shared_ptr<ClusterStore> previous;
  {
    std::lock_guard lk(mutex_);
    if (cluster_size_ != 0 && cluster_size_ != cs) {
      FLEECE_LOG_WARN("cbw", "store {} has cluster size {}, the disk's other stores {}",
                      store->path(), cs, cluster_size_);
      co_return std::make_error_code(std::errc::invalid_argument);
    }
    if (!chain_.empty()) previous = chain_.back()->store;
  }
  if (previous) {
    // Named strings: GCC 12 mishandles temporaries inside co_await.
    const std::string file = store->path(), format = store->format();
    if (auto ec = co_await previous->set_backing(file, format)) co_return ec;
  }

  std::lock_guard lk(mutex_);
  cluster_size_ = cs;
  clusters_ = count;
  snap->id = next_id_++;
  chain_.push_back(snap);
  FLEECE_LOG_INFO("cbw", "snapshot {} started: store {}, {} clusters of {} bytes, {} open",
                  snap->id, snap->store->path(), count, cs, chain_.size());
  co_return snap->id;
}

Task<std::error_code> CbwFilter::remove_snapshot(SnapshotId id) {
  std::shared_ptr<Snapshot> snap;
  uint64_t clusters = 0;
  {
    auto admin = co_await admin_.lock(0, 0, kExclusive);
    std::lock_guard lk(mutex_);
    snap = find_exported(id);
    if (!snap) co_return std::make_error_code(std::errc::no_such_device);
    snap->exported = false;
    snap->needs.reset(0, clusters_);
    clusters = clusters_;
    FLEECE_LOG_INFO("cbw", "snapshot {} stopped", id);
  }
  // Everything it read is released as by a discard of the whole disk: what
  // nobody else reads is freed, and its store goes once nobody reads
  // through it.
  co_await release_clusters(snap, 0, clusters);
  co_return std::error_code{};
}

Task<void> CbwFilter::reap_zombies() {
  auto admin = co_await admin_.lock(0, 0, kExclusive);
  for (;;) {
    std::shared_ptr<Snapshot> zombie, pred;
    std::shared_ptr<ClusterStore> next;
    std::vector<uint64_t> to_zero;
    {
      std::lock_guard lk(mutex_);
      std::optional<size_t> found;
      for (size_t i = 0; i < chain_.size() && !found; ++i) {
        if (chain_[i]->exported) continue;
        const UnitBits& holds = chain_[i]->holds;
        bool read_through = false;
        for (uint64_t c = holds.find(0, clusters_); c < clusters_ && !read_through;
             c = holds.find(c + 1, clusters_))
          read_through = store_has_readers(i, c);
        if (!read_through) found = i;
      }
      if (!found) co_return;
      // From here on nobody reads through the zombie (nobody needs what it
      // holds), so the chain may simply skip it: readers and writers see
      // the same bytes for every cluster anyone needs.
      const size_t i = *found;
      zombie = chain_[i];
      chain_.erase(chain_.begin() + static_cast<std::ptrdiff_t>(i));
      if (i > 0) pred = chain_[i - 1];
      if (i < chain_.size()) next = chain_[i]->store;
      if (pred) {
        const UnitBits& holds = zombie->holds;
        for (uint64_t c = holds.find(0, clusters_); c < clusters_; c = holds.find(c + 1, clusters_))
          if (!pred->holds[c]) to_zero.push_back(c);
      }
      if (chain_.empty()) {
        cluster_size_ = 0;
        clusters_ = 0;
      }
    }
    // St_{i-1}'s qcow2 view must not fall through to newer data where the
    // removed store used to answer.
    for (uint64_t c : to_zero) {
      auto guard = co_await locks_.lock(c, c, kExclusive);
      {
        std::lock_guard lk(mutex_);
        if (!index_of(pred.get()) || pred->holds[c]) continue;
      }
      auto ec = co_await pred->store->mark_zero(c);
      std::lock_guard lk(mutex_);
      if (ec)
        FLEECE_LOG_WARN("cbw", "marking cluster {} zero in {} failed: {}", c,
                        pred->store->path(), ec.message());
      else
        pred->holds.set(c);
    }
    if (pred) {
      const std::string file = next ? next->path() : options_.disk_path;
      const std::string format = next ? next->format() : options_.disk_format;
      auto ec = co_await pred->store->set_backing(file, format);
      if (ec)
        FLEECE_LOG_WARN("cbw", "re-pointing {} failed: {}", pred->store->path(), ec.message());
    }
    FLEECE_LOG_INFO("cbw", "store {} of snapshot {} removed", zombie->store->path(), zombie->id);
  }
}

// ---------------------------------------------------------------------------
// Frozen path.

Task<std::error_code> CbwFilter::read_frozen(SnapshotId id, uint64_t offset,
                                             std::span<std::byte> out) {
  uint64_t cs = 0;
  {
    std::lock_guard lk(mutex_);
    if (!find_exported(id)) co_return std::make_error_code(std::errc::no_such_device);
    cs = cluster_size_;
  }
  if (offset > size_ || out.size() > size_ - offset)
    co_return std::make_error_code(std::errc::invalid_argument);
  if (out.empty()) co_return std::error_code{};
  const uint64_t first = offset / cs;
  const uint64_t last = (offset + out.size() - 1) / cs;

  // One shared lock over the units read: a unit read from D cannot be
  // overwritten (its copy waits), and a discard waits for this read before
  // freeing.
  auto guard = co_await locks_.lock(first, last, kShared);

  struct Piece {
    uint64_t offset;
    size_t length;
    std::shared_ptr<ClusterStore> store;  // null: the live disk
  };
  std::vector<Piece> pieces;
  std::shared_ptr<Snapshot> snap;
  {
    std::lock_guard lk(mutex_);
    snap = find_exported(id);
    if (!snap) co_return std::make_error_code(std::errc::no_such_device);
    if (snap->broken) co_return make_error_code(Errc::snapshot_broken);
    const size_t i = *index_of(snap.get());
    for (uint64_t c = first; c <= last; ++c) {
      if (!snap->needs[c]) co_return make_error_code(Errc::access_revoked);
      const uint64_t lo = std::max(offset, c * cs);
      const uint64_t hi = std::min(offset + out.size(), (c + 1) * cs);
      auto k = first_holder(i, c);
      std::shared_ptr<ClusterStore> st = k ? chain_[*k]->store : nullptr;
      if (!st && !pieces.empty() && !pieces.back().store &&
          pieces.back().offset + pieces.back().length == lo)
        pieces.back().length += hi - lo;  // one D read for a run
      else
        pieces.push_back(Piece{lo, static_cast<size_t>(hi - lo), std::move(st)});
    }
  }
  for (auto& p : pieces) {
    auto dst = out.subspan(p.offset - offset, p.length);
    std::error_code ec;
    if (p.store)
      ec = co_await p.store->read(p.offset / cs, static_cast<uint32_t>(p.offset % cs), dst);
    else
      ec = co_await disk_->read(p.offset, dst);
    if (ec) co_return ec;
  }
  // A snapshot broken or stopped during the read may have had D change
  // under it: once it stops needing a cluster, writers stop waiting for it.
  std::lock_guard lk(mutex_);
  if (snap->broken) co_return make_error_code(Errc::snapshot_broken);
  if (!snap->exported) co_return std::make_error_code(std::errc::no_such_device);
  co_return std::error_code{};
}

Task<std::error_code> CbwFilter::discard_frozen(SnapshotId id, uint64_t offset, uint64_t length) {
  std::shared_ptr<Snapshot> snap;
  uint64_t first = 0, end = 0;
  {
    std::lock_guard lk(mutex_);
    snap = find_exported(id);
    if (!snap) co_return std::make_error_code(std::errc::no_such_device);
    if (offset > size_ || length > size_ - offset)
      co_return std::make_error_code(std::errc::invalid_argument);
    const uint64_t cs = cluster_size_;
    first = (offset + cs - 1) / cs;  // inward
    end = offset + length == size_ ? clusters_ : (offset + length) / cs;
    if (first >= end) co_return std::error_code{};
    // (1) From now on reads of these clusters fail and writes stop copying
    // them for this snapshot.
    snap->needs.reset(first, end);
  }
  co_await release_clusters(snap, first, end);
  co_return std::error_code{};
}

Task<void> CbwFilter::release_clusters(std::shared_ptr<Snapshot> snap, uint64_t first,
                                       uint64_t end) {
  // Only clusters a store holds, or a copy in flight may still give to one
  // (it holds the cluster's exclusive lock), can be freed; the others (most
  // of a large disk) are passed over in batches, without a lock each.
  // Readers of those read D, and a writer's copy still waits for them.
  // Locked ones are listed first: a copy that ends before that has set its
  // holds bit.
  constexpr uint64_t kBatch = 1 << 16;
  std::vector<uint64_t> todo;
  for (uint64_t from = first; from < end; from += kBatch) {
    const uint64_t to = std::min(end, from + kBatch);
    todo.clear();
    locks_.exclusive_in(from, to, &todo);
    {
      std::lock_guard lk(mutex_);
      size_t i = 0;
      while (i < chain_.size() && chain_[i]->id < snap->id) ++i;
      for (size_t j = i; j < chain_.size(); ++j) {
        const UnitBits& holds = chain_[j]->holds;
        for (uint64_t c = holds.find(from, to); c < to; c = holds.find(c + 1, to)) todo.push_back(c);
      }
    }
    std::sort(todo.begin(), todo.end());
    todo.erase(std::unique(todo.begin(), todo.end()), todo.end());
    for (uint64_t c : todo) co_await release_cluster(snap, c);
    co_await yield();
  }
  bool zombies = false;
  {
    std::lock_guard lk(mutex_);
    for (auto& s : chain_) zombies = zombies || !s->exported;
  }
  if (zombies) co_await reap_zombies();
}

Task<void> CbwFilter::release_cluster(const std::shared_ptr<Snapshot>& snap, uint64_t c) {
  {
    // (2) Wait for reads that started before needs was cleared; keep copies
    // off C meanwhile.
    auto guard = co_await locks_.lock(c, c, kExclusive);
    std::shared_ptr<Snapshot> owner;
    {
      std::lock_guard lk(mutex_);
      // A stopped snapshot may have left the chain meanwhile; its clusters
      // were read from the stores above where it was (ids grow up the chain).
      size_t i = 0;
      while (i < chain_.size() && chain_[i]->id < snap->id) ++i;
      auto k = first_holder(i, c);
      // A stopped snapshot's store is left alone: it goes whole once
      // nobody reads through it, cheaper than freeing it cluster by cluster.
      if (k && chain_[*k]->exported && chain_[*k]->store->state(c) == ClusterState::data &&
          !store_has_readers(*k, c))
        owner = chain_[*k];
    }
    // (3) Free what the snapshot read if nobody reads it any more; it stays
    // a zero cluster, so no qcow2 reader of that store falls through to
    // newer data.
    if (!owner) co_return;
    auto ec = co_await owner->store->discard(c);
    std::lock_guard lk(mutex_);
    if (ec)
      FLEECE_LOG_WARN("cbw", "freeing cluster {} of {} failed: {}", c, owner->store->path(),
                      ec.message());
    else
      ++owner->freed_clusters;
  }
}

Task<std::error_code> CbwFilter::block_status_frozen(SnapshotId id, uint64_t offset,
                                                     uint64_t length,
                                                     std::vector<block::Extent>& out) {
  uint64_t cs = 0;
  {
    std::lock_guard lk(mutex_);
    if (!find_exported(id)) co_return std::make_error_code(std::errc::no_such_device);
    cs = cluster_size_;
  }
  if (offset >= size_ || length == 0) co_return std::make_error_code(std::errc::invalid_argument);
  // Bounded work per call: runs of units read from the disk or discarded
  // are found a word of bits at a time, and at most kMaxUnits units held by
  // a store are looked at one by one. Callers continue from where the
  // extents stop.
  constexpr uint64_t kMaxUnits = 1 << 16;
  length = std::min(length, size_ - offset);
  const uint64_t first = offset / cs;
  const uint64_t last = (offset + length - 1) / cs;
  auto guard = co_await locks_.lock(first, last, kShared);

  struct Run {
    uint64_t offset, length;
    bool from_disk;
    block::Extent extent;
  };
  std::vector<Run> runs;
  uint32_t disk_depth_base = 0;
  {
    std::lock_guard lk(mutex_);
    auto snap = find_exported(id);
    if (!snap) co_return std::make_error_code(std::errc::no_such_device);
    if (snap->broken) co_return make_error_code(Errc::snapshot_broken);
    const size_t i = *index_of(snap.get());
    disk_depth_base = static_cast<uint32_t>(chain_.size() - i);
    // Units [from, to) as one run of bytes, joined to the previous if alike.
    auto add = [&](uint64_t from, uint64_t to, bool from_disk, block::Extent e) {
      const uint64_t lo = std::max(offset, from * cs);
      const uint64_t hi = std::min(offset + length, to * cs);
      if (!runs.empty() && runs.back().offset + runs.back().length == lo &&
          runs.back().from_disk == from_disk &&
          (from_disk || (runs.back().extent.flags == e.flags && runs.back().extent.depth == e.depth)))
        runs.back().length += hi - lo;
      else
        runs.push_back(Run{lo, hi - lo, from_disk, e});
    };
    const UnitBits& needs = snap->needs;
    const uint64_t end = last + 1;
    uint64_t c = first;
    for (uint64_t one_by_one = 0; c < end;) {
      // Up to the next unit that is held from St_i on or discarded: D.
      // (Each search ends where the previous found something.)
      uint64_t next = end;
      for (size_t j = i; j < chain_.size(); ++j) next = chain_[j]->holds.find(c, next);
      next = needs.find_clear(c, next);
      if (next > c) {
        add(c, next, true, {});
        c = next;
      } else if (!needs[c]) {
        next = needs.find(c, end);
        add(c, next, false, {0, block::kExtentHole | block::kExtentZero, 0});
        c = next;
      } else {
        if (++one_by_one > kMaxUnits) break;
        const size_t k = *first_holder(i, c);
        const bool zero = chain_[k]->store->state(c) != ClusterState::data;
        add(c, c + 1, false, {0, zero ? block::kExtentZero : 0u, static_cast<uint32_t>(k - i + 1)});
        ++c;
      }
    }
  }
  auto append = [&out](block::Extent e) {
    if (!out.empty() && out.back().flags == e.flags && out.back().depth == e.depth)
      out.back().length += e.length;
    else
      out.push_back(e);
  };
  for (auto& r : runs) {
    if (!r.from_disk) {
      r.extent.length = r.length;
      append(r.extent);
      continue;
    }
    uint64_t pos = r.offset;
    const uint64_t end = r.offset + r.length;
    while (pos < end) {
      std::vector<block::Extent> disk_extents;
      if (auto ec = co_await disk_->block_status(pos, end - pos, disk_extents)) co_return ec;
      if (disk_extents.empty()) co_return std::make_error_code(std::errc::io_error);
      for (auto& e : disk_extents) {
        if (pos >= end) break;
        uint64_t len = std::min(e.length, end - pos);
        if (len == 0) co_return std::make_error_code(std::errc::io_error);
        append({len, e.flags, e.depth == 0 ? 0u : e.depth + disk_depth_base});
        pos += len;
      }
    }
  }
  co_return std::error_code{};
}

// ---------------------------------------------------------------------------
// Observation.

std::optional<SnapshotStats> CbwFilter::stats(SnapshotId id) const {
  std::lock_guard lk(mutex_);
  for (auto& s : chain_) {
    if (s->id != id) continue;
    SnapshotStats st;
    st.preserved_bytes = s->preserved_bytes;
    st.copies = s->copies;
    st.zero_marks = s->zero_marks;
    st.freed_clusters = s->freed_clusters;
    st.stored_bytes = s->store->stored_bytes();
    st.broken = s->broken;
    st.broken_reason = s->broken_reason;
    st.exported = s->exported;
    return st;
  }
  return std::nullopt;
}

std::vector<SnapshotId> CbwFilter::snapshots() const {
  std::lock_guard lk(mutex_);
  std::vector<SnapshotId> ids;
  for (auto& s : chain_)
    if (s->exported) ids.push_back(s->id);
  return ids;
}

size_t CbwFilter::store_count() const {
  std::lock_guard lk(mutex_);
  return chain_.size();
}

uint32_t CbwFilter::cluster_size() const {
  std::lock_guard lk(mutex_);
  return cluster_size_;
}

std::shared_ptr<ClusterStore> CbwFilter::store(SnapshotId id) const {
  std::lock_guard lk(mutex_);
  for (auto& s : chain_)
    if (s->id == id) return s->store;
  return nullptr;
}

void CbwFilter::set_broken_callback(BrokenCallback cb) {
  std::lock_guard lk(mutex_);
  on_broken_ = std::move(cb);
}

}  // namespace fleece::cow
