#include "server/export_registry.hpp"

#include "nbd/constants.hpp"

#include <algorithm>

namespace fleece::server {

Export::Export(std::string name, std::shared_ptr<block::Device> device, bool writable,
               std::string description, std::string disk_name, MetaContexts contexts,
               bool discard_only)
    : name_(std::move(name)),
      device_(std::move(device)),
      writable_(writable && !device_->capabilities().read_only),
      discard_only_(!writable_ && discard_only && device_->capabilities().can_trim),
      description_(std::move(description)),
      disk_name_(std::move(disk_name)),
      contexts_(std::move(contexts)) {}

std::shared_ptr<MetaContext> Export::meta_context(std::string_view name) const {
  for (const auto& c : contexts_) {
    if (c->name() == name) return c;
  }
  return nullptr;
}

nbd::ExportInfo Export::info() const {
  const block::Capabilities caps = device_->capabilities();
  nbd::ExportInfo info;
  info.name = name_;
  info.description = description_;
  info.size = device_->size();
  uint16_t flags = nbd::kFlagSendDf | nbd::kFlagSendCache;
  // One Device is shared by every connection and has no per-connection
  // cache, so a flush on one connection covers writes done on all.
  flags |= nbd::kFlagCanMultiConn;
  if (caps.can_flush) flags |= nbd::kFlagSendFlush;
  if (caps.rotational) flags |= nbd::kFlagRotational;
  if (discard_only_) {
    flags |= nbd::kFlagSendTrim;
  } else if (!writable_) {
    flags |= nbd::kFlagReadOnly;
  } else {
    if (caps.can_fua) flags |= nbd::kFlagSendFua;
    if (caps.can_trim) flags |= nbd::kFlagSendTrim;
    flags |= nbd::kFlagSendWriteZeroes;
    if (caps.can_fast_zero) flags |= nbd::kFlagSendFastZero;
  }
  info.transmission_flags = flags;
  info.min_block = std::max<uint32_t>(caps.min_block, 1);
  info.preferred_block = std::max<uint32_t>({caps.preferred_block, info.min_block, 512});
  info.max_block = std::max(std::min<uint32_t>(caps.max_block, nbd::kMaxPayload), info.preferred_block);
  info.meta_contexts = {nbd::kContextBaseAllocation};
  for (const auto& c : contexts_) info.meta_contexts.push_back(c->name());
  return info;
}

std::error_code ExportRegistry::add(std::string name, std::shared_ptr<block::Device> device,
                                    bool writable, std::string description,
                                    std::string disk_name, MetaContexts contexts,
                                    bool discard_only) {
  if (!device || name.size() > nbd::kMaxStringLength || description.size() > nbd::kMaxStringLength) {
    return std::make_error_code(std::errc::invalid_argument);
  }
  for (const auto& c : contexts) {
    if (!c) return std::make_error_code(std::errc::invalid_argument);
  }
  auto entry = std::make_shared<Export>(name, std::move(device), writable, std::move(description),
                                        std::move(disk_name), std::move(contexts), discard_only);
  std::lock_guard lock(mutex_);
  if (exports_.contains(name)) return std::make_error_code(std::errc::file_exists);
  if (exports_.empty()) first_added_ = name;
  exports_.emplace(std::move(name), std::move(entry));
  return {};
}

std::error_code ExportRegistry::remove(std::string_view name, RemoveMode mode) {
  std::vector<CloseClient> to_close;
  {
    std::lock_guard lock(mutex_);
    auto it = exports_.find(name);
    if (it == exports_.end()) return std::make_error_code(std::errc::no_such_device_or_address);
    for (auto& [id, client] : clients_) {
      if (client.info.export_name != name) continue;
      if (mode == RemoveMode::safe) return std::make_error_code(std::errc::device_or_resource_busy);
      if (client.close) to_close.push_back(std::exchange(client.close, nullptr));
    }
    exports_.erase(it);
    if (first_added_ == name) first_added_ = exports_.empty() ? std::string() : exports_.begin()->first;
  }
  // Outside the lock: a close function may detach its client right away.
  for (auto& close : to_close) close();
  return {};
}

std::shared_ptr<Export> ExportRegistry::resolve_locked(std::string_view name) const {
  auto it = exports_.find(name);
  if (it == exports_.end() && name.empty() && !first_added_.empty()) it = exports_.find(first_added_);
  return it == exports_.end() ? nullptr : it->second;
}

std::shared_ptr<Export> ExportRegistry::get(std::string_view name) const {
  std::lock_guard lock(mutex_);
  return resolve_locked(name);
}

std::vector<std::shared_ptr<Export>> ExportRegistry::exports() const {
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<Export>> out;
  out.reserve(exports_.size());
  for (const auto& [name, e] : exports_) out.push_back(e);
  return out;
}

bool ExportRegistry::empty() const {
  std::lock_guard lock(mutex_);
  return exports_.empty();
}

ClientInfo ExportRegistry::Client::snapshot() const {
  ClientInfo out = info;
  if (counters) out.read_bytes = counters->read_bytes.load(std::memory_order_relaxed);
  return out;
}

uint64_t ExportRegistry::attach_client(const std::string& export_name, std::string peer,
                                       CloseClient close, std::shared_ptr<const ClientCounters> counters) {
  ClientInfo info;
  ClientHook hook;
  {
    std::lock_guard lock(mutex_);
    info.id = next_client_id_++;
    info.export_name = export_name;
    info.peer = std::move(peer);
    info.connected_at = std::chrono::system_clock::now();
    clients_.emplace(info.id, Client{info, std::move(close), std::move(counters)});
    hook = on_connected_;
  }
  if (hook) hook(info);
  return info.id;
}

void ExportRegistry::detach_client(uint64_t id) {
  ClientInfo info;
  ClientHook hook;
  {
    std::lock_guard lock(mutex_);
    auto it = clients_.find(id);
    if (it == clients_.end()) return;
    info = it->second.snapshot();
    clients_.erase(it);
    hook = on_disconnected_;
  }
  if (hook) hook(info);
}

std::vector<ClientInfo> ExportRegistry::clients() const {
  std::lock_guard lock(mutex_);
  std::vector<ClientInfo> out;
  for (const auto& [id, c] : clients_) out.push_back(c.snapshot());
  return out;
}

std::vector<ClientInfo> ExportRegistry::clients(std::string_view export_name) const {
  std::lock_guard lock(mutex_);
  std::vector<ClientInfo> out;
  for (const auto& [id, c] : clients_) {
    if (c.info.export_name == export_name) out.push_back(c.snapshot());
  }
  return out;
}

void ExportRegistry::set_client_hooks(ClientHook connected, ClientHook disconnected) {
  std::lock_guard lock(mutex_);
  on_connected_ = std::move(connected);
  on_disconnected_ = std::move(disconnected);
}

std::optional<nbd::ExportInfo> ExportRegistry::find(std::string_view name) const {
  auto e = get(name);
  if (!e) return std::nullopt;
  return e->info();
}

std::vector<nbd::ExportInfo> ExportRegistry::list() const {
  std::vector<nbd::ExportInfo> out;
  for (const auto& e : exports()) out.push_back(e->info());
  return out;
}

}  // namespace fleece::server
