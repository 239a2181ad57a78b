// FleeceTable: the live fleeces of a server, by id (what QMP fleece-start,
// fleece-stop and query-fleeces drive).
//
// A fleece is a snapshot::FleeceGroup over one or more disks of the
// DiskTable, one throwaway qcow2 store per disk, and one export per disk,
// "NAME@ID", serving the FrozenView: not flagged read-only but refusing
// writes (EPERM), so that clients may send TRIM ("done with these blocks",
// QEMU's snapshot-access does the same), multi-conn, base:allocation
// describing the frozen image.
//
// Stores are files `NODE.fleece-PID-ID.qcow2` in the store dir (or beside
// the disk's active layer when none is set), created exclusively, backed by
// the active layer (absolute path, so qemu-img reads a store through its
// chain from anywhere), and flock()ed for as long as this process holds
// them. A store file is deleted once nothing reads it any more: when its
// fleece stops and no older snapshot of the same disk still reads through
// it (CbwFilter keeps such a store as a hidden zombie until then), and at
// shutdown (delete_all_stores()).
//
// A new fleece re-points the previous newest store's backing link at its own
// store (CbwFilter::add_snapshot); that header write and flush happens after
// the write gates open again, before start() returns, so guest writes wait
// only for the drain and the bitmap install. qemu-img reads a live store
// exactly at a quiescent moment: after a flush of the disk (which flushes
// the stores' metadata too).
//
// Stale stores (a server killed with SIGKILL) are found at start-up by
// remove_stale_stores(): every file named like a store in the store dir and
// beside each disk whose flock can be taken belongs to no live process and
// is deleted. A store of another live server sharing the dir stays, since
// its flock is held; a lock, unlike a pid, cannot be reused.
//
// Thread-safe; start/stop are coroutines for the QMP strand. A broken
// snapshot (CbwFilter's callback) is reported through `emit_event` as
// FLEECE_BROKEN {"id", "device", "reason"}.
#pragma once

#include "block/device.hpp"
#include "cow/cbw_filter.hpp"
#include "server/disk_table.hpp"
#include "server/export_registry.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fleece::snapshot {
class FleeceGroup;
}

namespace fleece::server {

struct FleeceStartRequest {
  std::string id;
  std::vector<std::string> devices;  // node names, distinct
  cow::SnapshotPolicy policy;
  uint32_t cluster_size = 0;  // the stores' qcow2 cluster size; 0: 64 KiB
  // The copy unit; 0: the disk's current one if the cluster size allows it,
  // else the cluster size below 16 KiB, else max(4 KiB, cluster size / 32).
  uint32_t granularity = 0;
  // Optional: runs at the point in time, every gate closed (dirty bitmaps
  // freeze here); an error fails the start.
  std::function<std::error_code()> at_point_in_time;
  // Optional: extra metadata contexts of a device's NAME@ID export.
  std::function<MetaContexts(const std::string& device)> view_contexts;
};

// Why a start/stop failed: the message is the QMP "desc".
struct FleeceError {
  enum class Kind { generic, device_not_found } kind = Kind::generic;
  std::string message;
};

struct FleeceStarted {
  std::optional<FleeceError> error;  // set: nothing was started
  std::vector<std::string> exports;
  std::chrono::microseconds write_pause{0};
};

struct FleeceMemberInfo {
  std::string device;
  std::string export_name;
  std::string store;  // the store file's path
  uint32_t cluster_size = 0;  // the store's qcow2 clusters
  uint32_t granularity = 0;   // the copy unit
  cow::SnapshotStats stats;
  uint64_t read_bytes = 0;  // by every client of the export so far
  std::vector<ClientInfo> clients;
};

struct FleeceInfo {
  std::string id;
  std::vector<FleeceMemberInfo> members;
  std::chrono::microseconds write_pause{0};
  cow::SnapshotPolicy policy;
};

class FleeceTable {
 public:
  using EventSink = std::function<void(std::string_view name, std::string data_json)>;
  struct Options {
    std::string store_dir;  // "" = beside each disk's active layer
    EventSink emit_event;   // may be empty
  };

  FleeceTable(DiskTable& disks, ExportRegistry& registry, Options options);
  ~FleeceTable();  // delete_all_stores()
  FleeceTable(const FleeceTable&) = delete;
  FleeceTable& operator=(const FleeceTable&) = delete;

  // The arguments are read before the first suspension; they may be locals of the caller.
  block::Task<FleeceStarted> start(const FleeceStartRequest& request);
  block::Task<std::optional<FleeceError>> stop(const std::string& id);
  std::vector<FleeceInfo> list() const;  // in id order

  // Start-up sweep (see above); returns the paths deleted.
  std::vector<std::string> remove_stale_stores(const std::vector<Disk>& disks) const;
  // Shutdown: every store file this table created and still holds is deleted.
  void delete_all_stores();

  // The store file name for disk `node` in fleece `id` of this process.
  static std::string store_file_name(std::string_view node, std::string_view id);
  // Whether a file name looks like a store (any process, any fleece).
  static bool is_store_file_name(std::string_view name);

  struct State;

 private:
  std::string store_dir_for(const Disk& disk) const;

  DiskTable& disks_;
  ExportRegistry& registry_;
  Options options_;
  std::shared_ptr<State> state_;
};

}  // namespace fleece::server
