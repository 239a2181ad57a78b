// ExportRegistry: the exports a server offers, and who is connected to them.
//
// An export is a name bound to a Device (plus writable/description). The
// registry is the nbd::ExportCatalog the negotiator consults, the table QMP
// edits at run time (nbd-server-add / nbd-server-remove), and the list of
// connected clients (query-nbd-exports, NBD_CLIENT_* events).
//
// Thread safety: every member may be called from any thread. Connections
// look an export up once, at the end of negotiation, and then hold its
// shared_ptr<Export>: the request path takes no lock here.
//
// The empty name "" (a client that names no export) resolves to the export
// called "" if there is one, else to the first export added.
#pragma once

#include "block/device.hpp"
#include "nbd/export_info.hpp"
#include "server/export_stats.hpp"
#include "server/meta_context.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace fleece::server {

using MetaContexts = std::vector<std::shared_ptr<MetaContext>>;

class Export {
 public:
  // discard_only: a non-writable export whose device can trim (a frozen
  // view) is not flagged read-only and advertises TRIM, so that clients may
  // say they are done with blocks; writes still fail (EPERM, from the device).
  Export(std::string name, std::shared_ptr<block::Device> device, bool writable,
         std::string description, std::string disk_name, MetaContexts contexts = {},
         bool discard_only = false);

  const std::string& name() const { return name_; }
  const std::string& description() const { return description_; }
  const std::string& disk_name() const { return disk_name_; }  // DiskTable key, may be ""
  bool writable() const { return writable_; }
  bool discard_only() const { return discard_only_; }
  const std::shared_ptr<block::Device>& device() const { return device_; }
  // Contexts besides base:allocation, by full name (nullptr if not offered).
  const MetaContexts& meta_contexts() const { return contexts_; }
  std::shared_ptr<MetaContext> meta_context(std::string_view name) const;
  ExportStats& stats() { return stats_; }
  const ExportStats& stats() const { return stats_; }

  // What negotiation advertises: size, transmission flags from the device's
  // capabilities, block sizes, meta contexts.
  nbd::ExportInfo info() const;

 private:
  std::string name_;
  std::shared_ptr<block::Device> device_;
  bool writable_;
  bool discard_only_;
  std::string description_;
  std::string disk_name_;
  MetaContexts contexts_;
  ExportStats stats_;
};

struct ClientInfo {
  uint64_t id = 0;
  std::string export_name;
  std::string peer;  // "unix", "127.0.0.1:53422", "[::1]:53422"
  std::chrono::system_clock::time_point connected_at;
  uint64_t read_bytes = 0;  // of the READ requests that succeeded so far
};

// What one connection counts as its requests complete: written by that
// connection alone (relaxed), read by clients() at any time.
struct ClientCounters {
  std::atomic<uint64_t> read_bytes{0};
};

class ExportRegistry final : public nbd::ExportCatalog {
 public:
  enum class RemoveMode {
    safe,  // refuse (device_or_resource_busy) while clients are connected
    hard,  // close the connected clients, then remove
  };
  using ClientHook = std::function<void(const ClientInfo&)>;
  using CloseClient = std::function<void()>;  // must be callable from any thread

  // errc::file_exists if the name is taken; errc::invalid_argument for a
  // name longer than the NBD string limit or a null device.
  std::error_code add(std::string name, std::shared_ptr<block::Device> device, bool writable,
                      std::string description = {}, std::string disk_name = {},
                      MetaContexts contexts = {}, bool discard_only = false);
  // errc::no_such_device_or_address if unknown; device_or_resource_busy
  // for a safe removal with clients attached.
  std::error_code remove(std::string_view name, RemoveMode mode);

  std::shared_ptr<Export> get(std::string_view name) const;  // "" resolves as above
  std::vector<std::shared_ptr<Export>> exports() const;      // in name order
  bool empty() const;

  // Connections in transmission register here; the hooks fire outside the
  // lock on the calling thread. close is called (once) by a hard removal.
  // counters, if given, are what clients() reports for this one.
  uint64_t attach_client(const std::string& export_name, std::string peer, CloseClient close,
                         std::shared_ptr<const ClientCounters> counters = nullptr);
  void detach_client(uint64_t id);
  std::vector<ClientInfo> clients() const;
  std::vector<ClientInfo> clients(std::string_view export_name) const;

  void set_client_hooks(ClientHook connected, ClientHook disconnected);

  // nbd::ExportCatalog
  std::optional<nbd::ExportInfo> find(std::string_view name) const override;
  std::vector<nbd::ExportInfo> list() const override;

 private:
  struct Client {
    ClientInfo info;
    CloseClient close;
    std::shared_ptr<const ClientCounters> counters;
    ClientInfo snapshot() const;
  };
  std::shared_ptr<Export> resolve_locked(std::string_view name) const;

  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<Export>, std::less<>> exports_;
  std::string first_added_;
  std::map<uint64_t, Client> clients_;
  uint64_t next_client_id_ = 1;
  ClientHook on_connected_, on_disconnected_;
};

}  // namespace fleece::server
