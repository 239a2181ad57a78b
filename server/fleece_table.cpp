#include "server/fleece_table.hpp"

#include "block/io_engine.hpp"
#include "block/no_flush_device.hpp"
#include "block/raw_file.hpp"
#include "block/unique_fd.hpp"
#include "cow/backing_chain.hpp"
#include "cow/cbw_qcow2_store.hpp"
#include "snapshot/fleece_group.hpp"
#include "util/log.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>

namespace fleece::server {

namespace fs = std::filesystem;
using block::Task;

namespace {

constexpr uint32_t kDefaultClusterSize = 64 * 1024;

// 4 KiB copies where the cluster size allows subclusters that small: a
// guest's first 4 KiB write then copies 4 KiB, not a whole cluster.
uint32_t default_granularity(uint32_t cluster_size) {
  if (cluster_size < 16384) return cluster_size;
  return std::max<uint32_t>(4096, cluster_size / 32);
}
constexpr std::string_view kStoreMarker = ".fleece-";
constexpr std::string_view kStoreSuffix = ".qcow2";

}  // namespace

struct FleeceTable::State {
  struct Member {
    std::string device;
    std::string export_name;
    std::string store_path;
    uint32_t cluster_size = 0;
    uint32_t granularity = 0;
    std::shared_ptr<cow::CbwFilter> filter;
    cow::SnapshotId snapshot = 0;
    std::shared_ptr<cow::ClusterStore> store;  // keeps the file until the filter lets go too
  };
  struct Entry {
    std::string id;
    std::unique_ptr<snapshot::FleeceGroup> group;
    std::vector<Member> members;
    cow::SnapshotPolicy policy;
  };

  mutable std::mutex mutex;
  std::map<std::string, std::shared_ptr<Entry>, std::less<>> fleeces;
  std::set<std::string, std::less<>> busy;         // ids being started or stopped
  std::set<std::string, std::less<>> store_paths;  // created by us, not deleted yet
  EventSink emit;
};

namespace {

// The store a fleece hands the filter: the qcow2 store, plus the file's
// life (locked while open, deleted when the last holder - the table's entry
// or the filter's chain - lets go) and deferred backing links: while a
// fleece is being installed, the filter's re-pointing of this store's
// backing file (a header write and a flush of the whole store) is only
// recorded, and done once the guests' writes flow again.
class StoreFile final : public cow::ClusterStore {
 public:
  std::string file_path;
  block::UniqueFd lock;
  std::weak_ptr<FleeceTable::State> table;
  std::shared_ptr<cow::Qcow2ClusterStore> store;

  ~StoreFile() override {
    store.reset();  // its fd first
    if (::unlink(file_path.c_str()) == 0) FLEECE_LOG_INFO("fleece", "store {} deleted", file_path);
    // The file's last fd: closing it frees the store's blocks.
    block::io::close_in_background(std::move(lock));
    if (auto st = table.lock()) {
      std::lock_guard lk(st->mutex);
      st->store_paths.erase(file_path);
    }
  }

  uint64_t size() const override { return store->size(); }
  uint32_t cluster_size() const override { return store->cluster_size(); }
  cow::ClusterState state(uint64_t cluster) const override { return store->state(cluster); }
  uint64_t stored_bytes() const override { return store->stored_bytes(); }
  bool all_absent() const override { return store->all_absent(); }
  std::string path() const override { return store->path(); }
  std::string format() const override { return store->format(); }
  // Forwarded without a coroutine frame of their own.
  Task<std::error_code> read(uint64_t cluster, uint32_t offset, std::span<std::byte> out) override {
    return store->read(cluster, offset, out);
  }
  Task<std::error_code> write_cluster(uint64_t cluster, std::span<const std::byte> data) override {
    return store->write_cluster(cluster, data);
  }
  Task<std::error_code> mark_zero(uint64_t cluster) override { return store->mark_zero(cluster); }
  Task<std::error_code> discard(uint64_t cluster) override { return store->discard(cluster); }
  Task<std::error_code> flush() override { return store->flush(); }
  Task<std::error_code> set_backing(const std::string& file, const std::string& format) override {
    {
      std::lock_guard lk(link_mutex_);
      if (defer_links_) {
        pending_link_ = std::pair(file, format);
        co_return std::error_code{};
      }
    }
    co_return co_await store->set_backing(file, format);
  }

  void defer_links() {
    std::lock_guard lk(link_mutex_);
    defer_links_ = true;
  }
  // Stops deferring and writes the last link asked for, if any.
  Task<std::error_code> apply_links() {
    std::optional<std::pair<std::string, std::string>> link;
    {
      std::lock_guard lk(link_mutex_);
      defer_links_ = false;
      link = std::exchange(pending_link_, std::nullopt);
    }
    if (!link) co_return std::error_code{};
    const std::string file = link->first, format = link->second;
    co_return co_await store->set_backing(file, format);
  }

 private:
  std::mutex link_mutex_;
  bool defer_links_ = false;
  std::optional<std::pair<std::string, std::string>> pending_link_;
};

bool is_identifier(std::string_view id) {
  if (id.empty() || id.size() > 128 || !std::isalpha(static_cast<unsigned char>(id[0]))) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') return false;
  }
  return true;
}

// Whether a file name is one of this process's stores (its name carries our pid).
bool is_own_store(FleeceTable::State& state, std::string_view name) {
  std::lock_guard lk(state.mutex);
  for (const auto& p : state.store_paths) {
    if (fs::path(p).filename() == name) return true;
  }
  return false;
}

std::string errno_text(int err) { return std::make_error_code(static_cast<std::errc>(err)).message(); }

// Creates and formats one store; on failure says why in *why (the file,
// once created, goes with the returned owner or on the error path).
Task<std::shared_ptr<cow::ClusterStore>> create_store(std::shared_ptr<FleeceTable::State> state,
                                                      std::string path, uint64_t size,
                                                      uint32_t cluster_size, uint32_t granularity,
                                                      cow::ChainLayer active, std::string* why) {
  {
    // Listed before the file exists: a sweep running meanwhile (a disk
    // opened on another thread) skips it in the moment before its flock.
    std::lock_guard lk(state->mutex);
    state->store_paths.insert(path);
  }
  int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int err = errno;
    {
      std::lock_guard lk(state->mutex);
      state->store_paths.erase(path);
    }
    *why = fmt::format("cannot create the store '{}': {} ({})", path, errno_text(err),
                       err == EEXIST ? "remove the stale file or use another id"
                                     : "check the directory or set --store-dir");
    co_return nullptr;
  }
  auto owner = std::make_shared<StoreFile>();
  owner->file_path = path;
  owner->lock.reset(fd);
  owner->table = state;
  // Held until the file is deleted: the start-up sweep of another server
  // sharing the directory sees the lock and leaves the file alone.
  ::flock(fd, LOCK_EX | LOCK_NB);

  std::string message;
  auto file = block::open_raw_file(path, block::RawFileOptions{}, &message);
  if (!file) {
    *why = fmt::format("cannot open the store: {}", message);
    co_return nullptr;
  }
  std::error_code ec;
  std::string backing = fs::absolute(active.path, ec).lexically_normal().string();
  if (ec) backing = active.path;
  std::string format = active.format;
  // The store dies with the server (stale ones are deleted at start-up):
  // nothing in it needs fdatasync, and a guest FLUSH must not wait for one.
  auto store = co_await cow::Qcow2ClusterStore::create(block::without_flush(*file), path, size,
                                                       cluster_size, granularity, backing, format);
  if (!store) {
    *why = fmt::format("cannot format the store '{}': {}", path, store.error().message());
    co_return nullptr;
  }
  owner->store = *store;
  co_return owner;
}

void install_broken_callback(const std::shared_ptr<FleeceTable::State>& state,
                             const std::shared_ptr<cow::CbwFilter>& filter, std::string device) {
  std::weak_ptr<FleeceTable::State> weak = state;
  const cow::CbwFilter* which = filter.get();
  filter->set_broken_callback([weak, which, device](cow::SnapshotId sid, std::error_code why) {
    auto st = weak.lock();
    if (!st) return;
    std::string id;
    FleeceTable::EventSink emit;
    {
      std::lock_guard lk(st->mutex);
      for (const auto& [name, entry] : st->fleeces) {
        for (const auto& m : entry->members) {
          if (m.filter.get() == which && m.snapshot == sid) id = name;
        }
      }
      emit = st->emit;
    }
    FLEECE_LOG_WARN("fleece", "fleece {} on {} broke: {}", id.empty() ? "?" : id, device, why.message());
    if (id.empty() || !emit) return;
    emit("FLEECE_BROKEN", boost::json::serialize(boost::json::object{
                              {"id", id}, {"device", device}, {"reason", why.message()}}));
  });
}

// Marks an id busy for the lifetime of the guard.
class BusyGuard {
 public:
  BusyGuard(FleeceTable::State& state, std::string id) : state_(state), id_(std::move(id)) {}
  ~BusyGuard() {
    std::lock_guard lk(state_.mutex);
    state_.busy.erase(id_);
  }
  BusyGuard(const BusyGuard&) = delete;
  BusyGuard& operator=(const BusyGuard&) = delete;

 private:
  FleeceTable::State& state_;
  std::string id_;
};

FleeceStarted failed(std::string message, FleeceError::Kind kind = FleeceError::Kind::generic) {
  FleeceStarted out;
  out.error = FleeceError{kind, std::move(message)};
  return out;
}

}  // namespace

FleeceTable::FleeceTable(DiskTable& disks, ExportRegistry& registry, Options options)
    : disks_(disks), registry_(registry), options_(std::move(options)),
      state_(std::make_shared<State>()) {
  state_->emit = options_.emit_event;
}

FleeceTable::~FleeceTable() { delete_all_stores(); }

std::string FleeceTable::store_file_name(std::string_view node, std::string_view id) {
  return fmt::format("{}{}{}-{}{}", node, kStoreMarker, ::getpid(), id, kStoreSuffix);
}

bool FleeceTable::is_store_file_name(std::string_view name) {
  if (name.size() <= kStoreSuffix.size() || !name.ends_with(kStoreSuffix)) return false;
  const std::string_view stem = name.substr(0, name.size() - kStoreSuffix.size());
  for (size_t at = stem.find(kStoreMarker); at != std::string_view::npos;
       at = stem.find(kStoreMarker, at + 1)) {
    std::string_view rest = stem.substr(at + kStoreMarker.size());
    size_t digits = 0;
    while (digits < rest.size() && std::isdigit(static_cast<unsigned char>(rest[digits]))) ++digits;
    if (at > 0 && digits > 0 && digits + 1 < rest.size() && rest[digits] == '-') return true;
  }
  return false;
}

std::string FleeceTable::store_dir_for(const Disk& disk) const {
  if (!options_.store_dir.empty()) return options_.store_dir;
  const auto layers = disk.chain->layers();
  const std::string active = layers.empty() ? disk.spec.path : layers.front().path;
  fs::path dir = fs::path(active).parent_path();
  return dir.empty() ? std::string(".") : dir.string();
}

Task<FleeceStarted> FleeceTable::start(const FleeceStartRequest& request) {
  const std::string id = request.id;
  const std::function<std::error_code()> at_point_in_time = request.at_point_in_time;
  const auto view_contexts = request.view_contexts;
  if (!is_identifier(id)) {
    co_return failed(fmt::format("Parameter 'id' expects an identifier (a letter, then letters, digits, "
                                 "'-', '.', '_'; at most 128), got '{}'", id));
  }
  {
    std::lock_guard lk(state_->mutex);
    if (state_->fleeces.contains(id) || state_->busy.contains(id)) {
      co_return failed(fmt::format("Fleece '{}' already exists; stop it first (fleece-stop) or use another id", id));
    }
  }
  if (request.devices.empty()) co_return failed("Parameter 'devices' must list at least one device");
  if (request.cluster_size != 0 &&
      (request.cluster_size < 4096 || request.cluster_size > (2u << 20) ||
       (request.cluster_size & (request.cluster_size - 1)) != 0)) {
    co_return failed(fmt::format("Parameter 'cluster-size' must be a power of two from 4096 to 2097152, "
                                 "got {}", request.cluster_size));
  }

  const uint32_t cs = request.cluster_size ? request.cluster_size : kDefaultClusterSize;
  if (request.granularity != 0 &&
      (request.granularity < 4096 || !cow::Qcow2ClusterStore::valid_granularity(cs, request.granularity))) {
    co_return failed(fmt::format(
        "Parameter 'granularity' must be a power of two of at least 4096 and from cluster-size / 32 "
        "(cluster-size at least 16384) to cluster-size ({}), got {}", cs, request.granularity));
  }

  // Everything that can be checked without I/O, before anything is created.
  std::vector<Disk> disks;
  std::vector<uint32_t> granularities;
  for (const auto& name : request.devices) {
    auto disk = disks_.find(name);
    if (!disk) co_return failed(fmt::format("Device '{}' not found", name), FleeceError::Kind::device_not_found);
    for (const auto& d : disks) {
      if (d.name == name) co_return failed(fmt::format("Device '{}' is listed twice in 'devices'", name));
    }
    const uint32_t current = disk->filter->cluster_size();  // the copy unit
    uint32_t granularity = request.granularity;
    if (granularity == 0) {
      granularity = current && cow::Qcow2ClusterStore::valid_granularity(cs, current)
                        ? current
                        : default_granularity(cs);
    }
    if (current && granularity != current) {
      co_return failed(fmt::format(
          "Device '{}' already has fleeces with granularity {}; the fleeces of one disk share "
          "one copy unit (give 'granularity' {} with a 'cluster-size' that allows it)", name,
          current, current));
    }
    const std::string export_name = fmt::format("{}@{}", name, id);
    if (auto e = registry_.get(export_name); e && e->name() == export_name) {
      co_return failed(fmt::format("NBD server already has export named '{}'", export_name));
    }
    disks.push_back(std::move(*disk));
    granularities.push_back(granularity);
  }
  {
    std::lock_guard lk(state_->mutex);
    if (state_->fleeces.contains(id) || state_->busy.contains(id)) {
      co_return failed(fmt::format("Fleece '{}' already exists; stop it first (fleece-stop) or use another id", id));
    }
    state_->busy.insert(id);
  }
  BusyGuard busy(*state_, id);

  auto entry = std::make_shared<State::Entry>();
  entry->id = id;
  entry->policy = request.policy;
  std::vector<snapshot::FleeceGroup::Member> members;
  for (size_t i = 0; i < disks.size(); ++i) {
    const Disk& disk = disks[i];
    const auto layers = disk.chain->layers();
    cow::ChainLayer active = layers.empty() ? cow::ChainLayer{} : layers.front();
    if (layers.empty()) {
      active.path = disk.spec.path;
      active.format = disk.spec.format == DiskFormat::qcow2 ? "qcow2" : "raw";
    }
    std::string path = (fs::path(store_dir_for(disk)) / store_file_name(disk.name, id)).string();
    std::string why;
    auto store = co_await create_store(state_, path, disk.filter->size(), cs, granularities[i],
                                       active, &why);
    if (!store) co_return failed(fmt::format("fleece {}: device '{}': {}", id, disk.name, why));
    entry->members.push_back(State::Member{disk.name, fmt::format("{}@{}", disk.name, id), path,
                                           cs, granularities[i], disk.filter, 0, store});
    members.push_back(snapshot::FleeceGroup::Member{disk.name, disk.filter, store});
  }

  // Installing re-points each disk's newest store's backing link at the new
  // store: done after the gates open, not while guest writes wait.
  std::vector<std::shared_ptr<StoreFile>> relink;
  for (const auto& m : members) {
    const auto open = m.filter->snapshots();
    if (open.empty()) continue;
    if (auto newest = std::dynamic_pointer_cast<StoreFile>(m.filter->store(open.back()))) {
      newest->defer_links();
      relink.push_back(std::move(newest));
    }
  }
  auto group = co_await snapshot::FleeceGroup::start(id, std::move(members), request.policy, &at_point_in_time);
  for (const auto& store : relink) {
    if (auto ec = co_await store->apply_links()) {
      FLEECE_LOG_WARN("fleece", "fleece {}: re-pointing the backing file of {}: {} (qemu-img reading "
                      "that store sees the live disk behind it)", id, store->path(), ec.message());
    }
  }
  if (!group) {
    co_return failed(fmt::format("fleece {}: cannot install the snapshots: {}", id, group.error().message()));
  }
  entry->group = std::move(*group);
  for (size_t i = 0; i < entry->members.size(); ++i) {
    auto& m = entry->members[i];
    const auto& installed = entry->group->members()[i];
    m.snapshot = installed.snapshot;
    install_broken_callback(state_, m.filter, m.device);
  }

  FleeceStarted out;
  for (size_t i = 0; i < entry->members.size(); ++i) {
    auto& m = entry->members[i];
    auto view = entry->group->members()[i].view;
    const std::string description = fmt::format("fleece {} of {}", id, m.device);
    MetaContexts contexts = view_contexts ? view_contexts(m.device) : MetaContexts{};
    if (auto ec = registry_.add(m.export_name, view, false, description, m.device, std::move(contexts), true)) {
      for (const auto& name : out.exports) registry_.remove(name, ExportRegistry::RemoveMode::hard);
      co_await entry->group->stop();
      co_return failed(fmt::format("fleece {}: cannot export '{}': {}", id, m.export_name,
                                   ec == std::errc::file_exists ? "the name is taken" : ec.message()));
    }
    out.exports.push_back(m.export_name);
  }
  out.write_pause = entry->group->gate_closed_for();
  {
    std::lock_guard lk(state_->mutex);
    state_->fleeces.emplace(id, entry);
  }
  FLEECE_LOG_INFO("fleece", "fleece {} exported as {} (writes paused {} us)", id,
                  fmt::join(out.exports, ", "), out.write_pause.count());
  co_return out;
}

Task<std::optional<FleeceError>> FleeceTable::stop(const std::string& id_ref) {
  const std::string id = id_ref;
  std::shared_ptr<State::Entry> entry;
  {
    std::lock_guard lk(state_->mutex);
    if (state_->busy.contains(id)) {
      co_return FleeceError{FleeceError::Kind::generic,
                            fmt::format("Fleece '{}' is being started or stopped; try again", id)};
    }
    auto it = state_->fleeces.find(id);
    if (it == state_->fleeces.end()) {
      co_return FleeceError{FleeceError::Kind::generic,
                            fmt::format("Fleece '{}' not found (query-fleeces lists them)", id)};
    }
    entry = it->second;
    state_->fleeces.erase(it);
    state_->busy.insert(id);
  }
  BusyGuard busy(*state_, id);
  for (const auto& m : entry->members) registry_.remove(m.export_name, ExportRegistry::RemoveMode::hard);
  std::error_code ec = co_await entry->group->stop();
  if (ec) FLEECE_LOG_WARN("fleece", "fleece {}: stopping: {}", id, ec.message());
  co_return std::nullopt;
}

std::vector<FleeceInfo> FleeceTable::list() const {
  std::vector<std::shared_ptr<State::Entry>> entries;
  {
    std::lock_guard lk(state_->mutex);
    for (const auto& [id, e] : state_->fleeces) entries.push_back(e);
  }
  std::vector<FleeceInfo> out;
  for (const auto& e : entries) {
    FleeceInfo info{e->id, {}, e->group->gate_closed_for(), e->policy};
    for (const auto& m : e->members) {
      FleeceMemberInfo mi{m.device, m.export_name, m.store_path, m.cluster_size, m.granularity,
                          {}, 0, {}};
      if (auto s = m.filter->stats(m.snapshot)) mi.stats = *s;
      if (auto exported = registry_.get(m.export_name); exported && exported->name() == m.export_name) {
        mi.read_bytes = exported->stats().snapshot().read_bytes;
        mi.clients = registry_.clients(m.export_name);
      }
      info.members.push_back(std::move(mi));
    }
    out.push_back(std::move(info));
  }
  return out;
}

std::vector<std::string> FleeceTable::remove_stale_stores(const std::vector<Disk>& disks) const {
  std::set<std::string> dirs;
  if (!options_.store_dir.empty()) dirs.insert(options_.store_dir);
  for (const auto& d : disks) dirs.insert(fs::path(store_dir_for(d)).lexically_normal().string());
  std::vector<std::string> removed;
  for (const auto& dir : dirs) {
    std::error_code ec;
    for (const auto& item : fs::directory_iterator(dir, ec)) {
      const std::string name = item.path().filename().string();
      if (!is_store_file_name(name) || !item.is_regular_file(ec)) continue;
      const std::string path = item.path().string();
      if (is_own_store(*state_, name)) continue;
      block::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
      if (!fd) continue;
      // A live owner holds the lock; a killed one released it with its fds.
      if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;
      if (::unlink(path.c_str()) == 0) {
        FLEECE_LOG_WARN("fleece", "removed the stale store {} (its server is gone)", path);
        removed.push_back(path);
      }
    }
  }
  return removed;
}

void FleeceTable::delete_all_stores() {
  std::set<std::string, std::less<>> paths;
  {
    std::lock_guard lk(state_->mutex);
    paths.swap(state_->store_paths);
  }
  for (const auto& p : paths) {
    if (::unlink(p.c_str()) == 0) FLEECE_LOG_INFO("fleece", "store {} deleted", p);
  }
}

}  // namespace fleece::server
