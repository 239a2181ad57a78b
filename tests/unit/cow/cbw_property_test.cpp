// Property tests of copy-before-write exactness: random interleavings of
// guest writes, snapshot reads, discards, starts and stops, checked byte for
// byte against a model.
//
// The model: `live` is the disk as the guest wrote it (a write is applied
// when it completes; writes in flight at once never overlap in bytes, so
// their order does not matter, though they often share clusters). A
// snapshot's image is `live` copied while the write gate is closed. Every
// snapshot read must return its image exactly, or fail with access_revoked
// only where a discard was issued, or no_such_device only once its stop was
// issued. At the end of each round D must equal `live`, every open
// snapshot is read whole, and each store chain is walked the way qemu-img
// would (state, then backing file) and must show the image wherever the
// snapshot still needs data, and never newer data where it does not.
#include "cow/cbw_filter.hpp"
#include "cow/memory_store.hpp"
#include "tests/unit/cow/cbw_test_support.hpp"
#include "util/errors.hpp"
#include "util/log.hpp"

#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include <cstdlib>
#include <map>
#include <thread>

namespace {

using namespace fleece;
using namespace fleece::cbwtest;
using std::chrono::microseconds;

struct ModelSnap {
  cow::SnapshotId id = 0;
  std::vector<std::byte> image;
  std::vector<uint8_t> discard;  // per cluster: 0 needed, 1 discard issued, 2 discard done
  bool stopping = false;
  std::shared_ptr<cow::MemoryStore> store;
};

struct Counters {
  uint64_t writes = 0, reads_broken = 0, reads_ok = 0, reads_revoked = 0, reads_gone = 0, discards = 0,
           starts = 0, stops = 0, status = 0, broken_snapshots = 0;
};

struct World {
  uint32_t cs = 0;
  uint64_t size = 0, clusters = 0;
  std::shared_ptr<SlowDisk> disk;
  std::shared_ptr<cow::CbwFilter> filter;

  std::mutex mu;  // guards everything below
  std::vector<std::byte> live;     // the guest's writes, applied when they complete
  std::vector<std::byte> at_disk;  // the same, applied when they reach D (images come from it:
                                   // with two threads a write may be done before its caller runs)
  std::vector<std::shared_ptr<ModelSnap>> snaps;  // open, oldest first
  std::map<std::string, std::shared_ptr<cow::MemoryStore>> stores;
  std::vector<std::pair<uint64_t, uint64_t>> inflight;
  std::mt19937_64 rng;
  bool admin_busy = false;
  bool faults = false;  // stores fail now and then; policies are mixed
  uint64_t next_store = 0;
  Counters n;

  uint64_t rnd(uint64_t bound) {  // caller holds mu
    return bound ? rng() % bound : 0;
  }
  std::pair<uint64_t, uint64_t> range(uint64_t max_len) {  // [off, len), caller holds mu
    uint64_t len = 1 + rnd(std::min(max_len, size));
    uint64_t off = rnd(size - len + 1);
    // Bias towards cluster boundaries sometimes.
    if (rnd(4) == 0) off = std::min(off / cs * cs, size - len);
    return {off, len};
  }
};

std::vector<uint64_t> inward_clusters(const World& w, uint64_t off, uint64_t len) {
  uint64_t first = (off + w.cs - 1) / w.cs;
  uint64_t end = off + len == w.size ? w.clusters : (off + len) / w.cs;
  std::vector<uint64_t> out;
  for (uint64_t c = first; c < end; ++c) out.push_back(c);
  return out;
}

Task<void> guest_op(World& w) {
  uint64_t off, len;
  int kind;
  std::vector<std::byte> data;
  {
    std::lock_guard lk(w.mu);
    std::tie(off, len) = w.range(w.cs * 5 / 2);
    for (auto& [lo, hi] : w.inflight)
      if (off < hi && lo < off + len) co_return;  // overlapping bytes: order would be unknown
    w.inflight.emplace_back(off, off + len);
    kind = static_cast<int>(w.rnd(6));
    if (kind < 4) data = pattern(len, w.rng());
  }
  std::error_code ec;
  if (kind < 4) ec = co_await w.filter->write(off, cspan(data), {});
  else if (kind == 4) ec = co_await w.filter->write_zeroes(off, len, {.may_trim = (off & 1) != 0});
  else ec = co_await w.filter->trim(off, len, {});
  std::lock_guard lk(w.mu);
  if (ec) {
    // Only a copy that failed under break-guest-write may fail a guest
    // write, and then D was not touched.
    CHECK_MESSAGE(w.faults, ec.message());
    CHECK(ec == std::errc::io_error);
  } else if (kind < 4) {
    std::memcpy(w.live.data() + off, data.data(), len);
  } else {
    std::memset(w.live.data() + off, 0, len);
  }
  std::erase(w.inflight, std::pair<uint64_t, uint64_t>(off, off + len));
  ++w.n.writes;
}

Task<void> snapshot_read(World& w) {
  std::shared_ptr<ModelSnap> s;
  uint64_t off, len;
  bool must_fail = false;
  {
    std::lock_guard lk(w.mu);
    if (w.snaps.empty()) co_return;
    s = w.snaps[w.rnd(w.snaps.size())];
    std::tie(off, len) = w.range(w.cs * 3);
    for (uint64_t c = off / w.cs; c <= (off + len - 1) / w.cs; ++c)
      must_fail = must_fail || s->discard[c] == 2;
  }
  std::vector<std::byte> buf(len);
  auto ec = co_await w.filter->read_frozen(s->id, off, buf);
  std::lock_guard lk(w.mu);
  if (!ec) {
    CHECK_MESSAGE(!must_fail, "read of a discarded range succeeded");
    bool same = std::memcmp(buf.data(), s->image.data() + off, len) == 0;
    CHECK_MESSAGE(same, "snapshot ", s->id, " differs at [", off, ", +", len, ")");
    if (!same) {
      for (uint64_t c = off / w.cs; c <= (off + len - 1) / w.cs; ++c) {
        uint64_t lo = std::max(off, c * w.cs), hi = std::min(off + len, (c + 1) * w.cs);
        bool eq = std::memcmp(buf.data() + (lo - off), s->image.data() + lo, hi - lo) == 0;
        bool eq_live = std::memcmp(buf.data() + (lo - off), w.live.data() + lo, hi - lo) == 0;
        std::string line = "cluster " + std::to_string(c) + (eq ? " ok" : " BAD") +
                           (eq_live ? " (=live)" : "") + " discard=" + std::to_string(s->discard[c]) +
                           " own store state=" + std::to_string(int(s->store->state(c))) +
                           " snap#" + std::to_string(s->id);
        MESSAGE(line);
      }
    }
    ++w.n.reads_ok;
  } else if (ec == Errc::access_revoked) {
    bool may_fail = false;
    for (uint64_t c = off / w.cs; c <= (off + len - 1) / w.cs; ++c)
      may_fail = may_fail || s->discard[c] != 0;
    CHECK_MESSAGE(may_fail, "access revoked where nothing was discarded");
    ++w.n.reads_revoked;
  } else if (ec == Errc::snapshot_broken) {
    auto st = w.filter->stats(s->id);
    CHECK((!st || st->broken));
    CHECK(w.faults);
    ++w.n.reads_broken;
  } else {
    CHECK_MESSAGE(ec == std::errc::no_such_device, ec.message());
    CHECK(s->stopping);
    ++w.n.reads_gone;
  }
}

Task<void> snapshot_status(World& w) {
  std::shared_ptr<ModelSnap> s;
  uint64_t off, len;
  {
    std::lock_guard lk(w.mu);
    if (w.snaps.empty()) co_return;
    s = w.snaps[w.rnd(w.snaps.size())];
    std::tie(off, len) = w.range(w.cs * 4);
  }
  std::vector<block::Extent> ext;
  auto ec = co_await w.filter->block_status_frozen(s->id, off, len, ext);
  std::lock_guard lk(w.mu);
  if (ec) {
    CHECK((ec == std::errc::no_such_device || (w.faults && ec == Errc::snapshot_broken)));
    co_return;
  }
  uint64_t pos = off;
  for (auto& e : ext) {
    REQUIRE(e.length > 0);
    uint64_t end = std::min(off + len, pos + e.length);
    bool discarded_here = false;
    for (uint64_t c = pos / w.cs; c <= (end - 1) / w.cs; ++c)
      discarded_here = discarded_here || s->discard[c] != 0;
    if ((e.flags & block::kExtentZero) && !discarded_here) {
      bool zero = std::all_of(s->image.begin() + pos, s->image.begin() + end,
                              [](std::byte b) { return b == std::byte{0}; });
      CHECK_MESSAGE(zero, "extent reported zero over data at ", pos);
    }
    pos = end;
    if (pos >= off + len) break;
  }
  CHECK(pos == off + len);
  ++w.n.status;
}

Task<void> snapshot_discard(World& w) {
  std::shared_ptr<ModelSnap> s;
  uint64_t off, len;
  std::vector<uint64_t> cl;
  {
    std::lock_guard lk(w.mu);
    if (w.snaps.empty()) co_return;
    s = w.snaps[w.rnd(w.snaps.size())];
    std::tie(off, len) = w.range(w.cs * 4);
    cl = inward_clusters(w, off, len);
    for (auto c : cl)
      if (s->discard[c] == 0) s->discard[c] = 1;
  }
  auto ec = co_await w.filter->discard_frozen(s->id, off, len);
  std::lock_guard lk(w.mu);
  if (ec) {
    CHECK(ec == std::errc::no_such_device);
    CHECK(s->stopping);
  }
  for (auto c : cl) s->discard[c] = 2;
  ++w.n.discards;
}

Task<void> snapshot_start(World& w) {
  std::shared_ptr<cow::MemoryStore> store;
  cow::SnapshotPolicy policy;
  {
    std::lock_guard lk(w.mu);
    if (w.admin_busy || w.snaps.size() >= 4) co_return;
    w.admin_busy = true;
    auto name = "st-" + std::to_string(w.next_store++);
    store = std::make_shared<cow::MemoryStore>(w.size, w.cs, name);
    store->set_write_delay(microseconds(0), microseconds(150), w.rng());
    if (w.faults) store->fail_randomly(6);
    w.stores[name] = store;
    policy.on_error = w.faults && w.rnd(2) ? cow::OnCbwError::break_guest_write
                                           : cow::OnCbwError::break_snapshot;
  }
  const std::string disk_file = "disk", disk_format = "raw";
  co_await store->set_backing(disk_file, disk_format);  // created backed by the live disk
  co_await w.filter->close_gate();
  auto snap = std::make_shared<ModelSnap>();
  {
    std::lock_guard lk(w.mu);
    CHECK(w.filter->gate().in_flight() == 0);
    snap->image = w.at_disk;
  }
  auto id = co_await w.filter->add_snapshot(store, policy);
  w.filter->open_gate();
  REQUIRE(id.has_value());
  std::lock_guard lk(w.mu);
  snap->id = *id;
  snap->discard.assign(w.clusters, 0);
  snap->store = store;
  w.snaps.push_back(snap);
  w.admin_busy = false;
  ++w.n.starts;
}

Task<void> snapshot_stop(World& w) {
  std::shared_ptr<ModelSnap> s;
  {
    std::lock_guard lk(w.mu);
    if (w.admin_busy || w.snaps.empty()) co_return;
    w.admin_busy = true;
    size_t i = w.rnd(w.snaps.size());
    s = w.snaps[i];
    s->stopping = true;
    w.snaps.erase(w.snaps.begin() + static_cast<std::ptrdiff_t>(i));
  }
  auto ec = co_await w.filter->remove_snapshot(s->id);
  CHECK(!ec);
  std::vector<std::byte> one(1);
  auto after = co_await w.filter->read_frozen(s->id, 0, one);
  CHECK(after == std::errc::no_such_device);
  std::lock_guard lk(w.mu);
  w.admin_busy = false;
  ++w.n.stops;
}

Task<void> worker(World& w, int steps) {
  for (int i = 0; i < steps; ++i) {
    uint64_t pick;
    {
      std::lock_guard lk(w.mu);
      pick = w.rnd(100);
    }
    if (pick < 40) co_await guest_op(w);
    else if (pick < 70) co_await snapshot_read(w);
    else if (pick < 80) co_await snapshot_discard(w);
    else if (pick < 85) co_await snapshot_status(w);
    else if (pick < 93) co_await snapshot_start(w);
    else if (pick < 97) co_await snapshot_stop(w);
    else co_await sleep_for(microseconds(50));
  }
}

// What qemu-img would read for snapshot s at cluster c: the store chain by
// states and backing links, ending at the live disk.
std::vector<std::byte> chain_view(World& w, const ModelSnap& s, uint64_t c,
                                  const std::vector<std::byte>& disk) {
  const uint64_t lo = c * w.cs, hi = std::min(w.size, lo + w.cs);
  std::shared_ptr<cow::MemoryStore> st = s.store;
  for (int depth = 0; depth < 64; ++depth) {
    auto state = st->state(c);
    if (state == cow::ClusterState::data) return st->cluster_data(c);
    if (state == cow::ClusterState::zero) return std::vector<std::byte>(hi - lo);
    auto backing = st->backing();
    auto name = backing.substr(0, backing.find(" ("));
    if (name == "disk")
      return {disk.begin() + static_cast<std::ptrdiff_t>(lo),
              disk.begin() + static_cast<std::ptrdiff_t>(hi)};
    REQUIRE(w.stores.count(name));
    st = w.stores[name];
  }
  FAIL("backing chain loops");
  return {};
}

// Space: every data cluster of an open snapshot's store is read by some
// snapshot that still needs it, and every stopped snapshot's store still
// in the chain is read through by someone (else it should be gone).
void verify_space(World& w) {
  std::map<cow::ClusterStore*, std::vector<bool>> read;
  std::map<cow::ClusterStore*, std::shared_ptr<cow::MemoryStore>> chain;
  for (auto& s : w.snaps) {
    for (uint64_t c = 0; c < w.clusters; ++c) {
      std::shared_ptr<cow::MemoryStore> st = s->store;
      for (int depth = 0; st && depth < 64; ++depth) {
        chain[st.get()] = st;
        if (st->state(c) != cow::ClusterState::absent) {
          if (!s->discard[c]) {
            auto& bits = read[st.get()];
            bits.resize(w.clusters);
            bits[c] = true;
          }
          break;
        }
        auto backing = st->backing();
        auto name = backing.substr(0, backing.find(" ("));
        st = name == "disk" ? nullptr : w.stores[name];
      }
    }
  }
  CHECK(chain.size() == w.filter->store_count());
  for (auto& [raw, st] : chain) {
    bool open = std::any_of(w.snaps.begin(), w.snaps.end(),
                            [&](auto& s) { return s->store.get() == raw; });
    auto& bits = read[raw];
    bits.resize(w.clusters);
    if (!open) {
      CHECK_MESSAGE(std::find(bits.begin(), bits.end(), true) != bits.end(),
                    "stopped store ", st->path(), " kept though nobody reads through it");
      continue;
    }
    for (uint64_t c = 0; c < w.clusters; ++c)
      if (st->state(c) == cow::ClusterState::data)
        CHECK_MESSAGE(bits[c], "store ", st->path(), " keeps cluster ", c, " nobody reads");
  }
}

Task<void> verify_quiescent(World& w) {
  if (!w.faults) verify_space(w);  // broken snapshots keep what they had
  auto disk = w.disk->contents();
  CHECK_MESSAGE(disk == w.live, "the live disk differs from the guest's writes");
  CHECK(w.at_disk == w.live);
  for (auto& s : w.snaps) {
    if (w.filter->stats(s->id)->broken) {
      std::vector<std::byte> one(1);
      CHECK(co_await w.filter->read_frozen(s->id, 0, one) == Errc::snapshot_broken);
      ++w.n.broken_snapshots;
      continue;
    }
    for (uint64_t c = 0; c < w.clusters; ++c) {
      const uint64_t lo = c * w.cs, hi = std::min(w.size, lo + w.cs);
      std::vector<std::byte> buf(hi - lo);
      auto ec = co_await w.filter->read_frozen(s->id, lo, buf);
      std::vector<std::byte> want(s->image.begin() + static_cast<std::ptrdiff_t>(lo),
                                  s->image.begin() + static_cast<std::ptrdiff_t>(hi));
      auto view = chain_view(w, *s, c, disk);
      if (s->discard[c]) {
        CHECK(ec == Errc::access_revoked);
        bool zero = std::all_of(view.begin(), view.end(), [](std::byte b) { return b == std::byte{0}; });
        // (A failed zero mark is tolerated: it only costs the qcow2 view.)
        CHECK_MESSAGE((view == want || zero || w.faults),
                      "qcow2 view of a discarded cluster shows newer data");
      } else {
        CHECK_MESSAGE(!ec, ec.message());
        CHECK_MESSAGE(buf == want, "snapshot ", s->id, " cluster ", c, " differs");
        CHECK_MESSAGE(view == want, "qcow2 chain view of snapshot ", s->id, " cluster ", c,
                      " differs");
      }
    }
  }
}

struct RoundConfig {
  uint64_t seed;
  int workers = 6;
  int steps = 60;
  bool threads = false;
  bool faults = false;
};

void run_round(const RoundConfig& cfg, Counters& total) {
  log::set_level(log::Level::error);
  World w;
  w.rng.seed(cfg.seed);
  w.faults = cfg.faults;
  w.cs = (w.rng() % 2) ? 8192 : 4096;
  w.clusters = 12 + w.rng() % 20;
  w.size = w.clusters * w.cs - (w.rng() % 2 ? w.rng() % (w.cs - 1) : 0);  // often a short last cluster
  w.disk = std::make_shared<SlowDisk>(w.size);
  w.disk->set_delay(microseconds(0), microseconds(120), cfg.seed * 7 + 1);
  w.filter = std::make_shared<cow::CbwFilter>(w.disk, cow::CbwFilterOptions{"disk", "raw"});
  w.live.assign(w.size, std::byte{0});
  w.at_disk.assign(w.size, std::byte{0});
  w.disk->after_write = [&w](uint64_t off, uint64_t len, std::span<const std::byte> data) {
    std::lock_guard lk(w.mu);
    if (data.empty()) std::memset(w.at_disk.data() + off, 0, len);
    else std::memcpy(w.at_disk.data() + off, data.data(), len);
  };

  asio::io_context io;
  std::exception_ptr failure;
  // A named lambda: a coroutine lambda's captures live in the closure, which
  // must outlive the coroutine.
  auto body = [&]() -> Task<void> {
        // Initial contents with holes left in between.
        for (int i = 0; i < 8; ++i) {
          uint64_t off, len;
          {
            std::lock_guard lk(w.mu);
            std::tie(off, len) = w.range(w.cs * 2);
          }
          auto data = pattern(len, cfg.seed + 100 + i);
          REQUIRE(!co_await w.disk->write(off, cspan(data), {}));
          std::lock_guard lk(w.mu);
          std::memcpy(w.live.data() + off, data.data(), len);
        }
        co_await snapshot_start(w);
        std::atomic<int> running{cfg.workers};
        for (int i = 0; i < cfg.workers; ++i) {
          auto ex = co_await asio::this_coro::executor;
          asio::co_spawn(ex, worker(w, cfg.steps), [&](std::exception_ptr e) {
            if (e) {
              std::lock_guard lk(w.mu);
              failure = e;
            }
            --running;
          });
        }
        while (running > 0) co_await sleep_for(microseconds(200));
        co_await verify_quiescent(w);
        // Stop everything: every store must go.
        while (true) {
          std::shared_ptr<ModelSnap> s;
          {
            std::lock_guard lk(w.mu);
            if (w.snaps.empty()) break;
            s = w.snaps.back();
            w.snaps.pop_back();
          }
          CHECK(!co_await w.filter->remove_snapshot(s->id));
        }
        CHECK(w.filter->store_count() == 0);
  };
  asio::co_spawn(io, body(), [&](std::exception_ptr e) {
    if (e) failure = e;
  });
  if (cfg.threads) {
    std::thread t([&] { io.run(); });
    io.run();
    t.join();
  } else {
    io.run();
  }
  if (failure) std::rethrow_exception(failure);
  total.writes += w.n.writes;
  total.reads_ok += w.n.reads_ok;
  total.reads_revoked += w.n.reads_revoked;
  total.reads_gone += w.n.reads_gone;
  total.discards += w.n.discards;
  total.starts += w.n.starts;
  total.stops += w.n.stops;
  total.status += w.n.status;
  total.reads_broken += w.n.reads_broken;
  total.broken_snapshots += w.n.broken_snapshots;
}

int rounds_from_env(int fallback) {
  if (const char* s = std::getenv("FLEECE_CBW_ROUNDS")) return std::max(1, std::atoi(s));
  return fallback;
}

void report(const char* what, const Counters& t) {
  MESSAGE(std::string(what), ": ", t.writes, " guest writes, ", t.reads_ok, " exact snapshot reads, ",
          t.reads_revoked, " revoked, ", t.reads_gone, " after stop, ", t.discards,
          " discards, ", t.starts, " starts, ", t.stops, " stops, ", t.status,
          " block-status checks, ", t.reads_broken, " reads of broken snapshots, ",
          t.broken_snapshots, " broken at the end");
}

}  // namespace

TEST_CASE("cbw property: random interleavings on one io_context stay exact") {
  Counters total;
  const int rounds = rounds_from_env(40);
  const char* only = std::getenv("FLEECE_CBW_SEED");
  for (int r = 0; r < rounds; ++r) {
    CAPTURE(r);
    if (only && std::atoi(only) != r) continue;
    run_round({.seed = 1000 + static_cast<uint64_t>(r)}, total);
  }
  report("one thread", total);
  CHECK(total.reads_ok > 0);
  CHECK(total.reads_revoked > 0);
  CHECK(total.stops > 0);
}

TEST_CASE("cbw property: random interleavings on two threads stay exact") {
  Counters total;
  const int rounds = std::max(1, rounds_from_env(40) / 2);
  for (int r = 0; r < rounds; ++r) {
    CAPTURE(r);
    run_round({.seed = 5000 + static_cast<uint64_t>(r), .threads = true}, total);
  }
  report("two threads", total);
  CHECK(total.reads_ok > 0);
}

TEST_CASE("cbw property: with failing stores and mixed policies, unbroken snapshots stay exact") {
  Counters total;
  const int rounds = std::max(1, rounds_from_env(40) / 2);
  for (int r = 0; r < rounds; ++r) {
    CAPTURE(r);
    run_round({.seed = 9000 + static_cast<uint64_t>(r), .faults = true}, total);
  }
  report("failing stores", total);
  CHECK(total.reads_ok > 0);
  CHECK(total.reads_broken > 0);
}
