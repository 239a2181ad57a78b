// nbd-server-add, nbd-server-remove, query-nbd-exports, query-stats: the
// export registry at run time.
#include "server/allocation_depth_context.hpp"
#include "server/disk_table.hpp"
#include "server/export_registry.hpp"
#include "server/qmp_arguments.hpp"
#include "server/qmp_bitmaps.hpp"
#include "server/qmp_commands.hpp"
#include "util/log.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>

namespace fleece::server {

namespace json = boost::json;
using boost::asio::awaitable;

namespace {

json::object client_object(const ClientInfo& client) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                      client.connected_at.time_since_epoch()).count();
  return {{"id", client.id},
          {"address", client.peer},
          {"connected-at", {{"seconds", us / 1000000}, {"microseconds", us % 1000000}}}};
}

std::vector<QmpParam> nbd_server_add_params() {
  return {qmp_required("device", QmpType::string), qmp_optional("name", QmpType::string),
          qmp_optional("writable", QmpType::boolean), qmp_optional("description", QmpType::string),
          qmp_optional("bitmaps", QmpType::array)};
}

std::vector<QmpParam> nbd_server_remove_params() {
  QmpParam mode = qmp_optional("mode", QmpType::string);
  mode.choices = {"safe", "hard"};
  return {qmp_required("name", QmpType::string), mode};
}

}  // namespace

void register_nbd_commands(QmpCommandTable& table, const QmpServices& services) {
  DiskTable* disks = services.disks;
  ExportRegistry* registry = services.registry;

  table.add({"nbd-server-add", nbd_server_add_params(),
             [disks, registry](const json::object& args) -> awaitable<QmpResult> {
               const std::string device = qmp_arg_string(args, "device");
               const std::string name = qmp_arg_string(args, "name", device);
               const bool writable = qmp_arg_bool(args, "writable", false);
               auto disk = disks->find(device);
               if (!disk) co_return QmpError::device_not_found(fmt::format("Device '{}' not found", device));
               auto bitmap_contexts = export_bitmap_contexts(*disk, args.if_contains("bitmaps"), writable);
               if (auto* error = std::get_if<QmpError>(&bitmap_contexts)) co_return *error;
               if (writable && (disk->spec.read_only || disk->device->capabilities().read_only)) {
                 co_return QmpError::generic(fmt::format(
                     "Node '{}' is read-only; export it without writable=true", device));
               }
               if (name.size() > 4096) {
                 co_return QmpError::generic("Export name longer than 4096 bytes (the NBD limit)");
               }
               if (registry->get(name) && registry->get(name)->name() == name) {
                 co_return QmpError::generic(fmt::format("NBD server already has export named '{}'", name));
               }
               MetaContexts contexts = disk_export_contexts(*disk);
               for (auto& c : std::get<MetaContexts>(bitmap_contexts)) contexts.push_back(std::move(c));
               if (auto ec = registry->add(name, disk->device, writable, qmp_arg_string(args, "description"), device,
                                             std::move(contexts))) {
                 if (ec == std::errc::file_exists) {
                   co_return QmpError::generic(fmt::format("NBD server already has export named '{}'", name));
                 }
                 co_return QmpError::generic(fmt::format("Cannot export '{}' as '{}': {}", device, name, ec.message()));
               }
               FLEECE_LOG_INFO("qmp", "nbd-server-add {} as '{}'{}", device, name, writable ? " (writable)" : "");
               co_return json::value(json::object());
             }});

  table.add({"nbd-server-remove", nbd_server_remove_params(),
             [registry](const json::object& args) -> awaitable<QmpResult> {
               const std::string name = qmp_arg_string(args, "name");
               const bool hard = qmp_arg_string(args, "mode", "safe") == "hard";
               auto exported = registry->get(name);
               if (!exported || exported->name() != name) {
                 co_return QmpError::generic(fmt::format("Export '{}' is not found", name));
               }
               const std::size_t clients = registry->clients(name).size();
               auto ec = registry->remove(name, hard ? ExportRegistry::RemoveMode::hard
                                                     : ExportRegistry::RemoveMode::safe);
               if (ec == std::errc::device_or_resource_busy) {
                 co_return QmpError::generic(fmt::format(
                     "export '{}' still in use by {} client(s); use mode=hard to disconnect them",
                     name, std::max<std::size_t>(clients, 1)));
               }
               if (ec) co_return QmpError::generic(fmt::format("Export '{}' is not found", name));
               FLEECE_LOG_INFO("qmp", "nbd-server-remove {} ({})", name, hard ? "hard" : "safe");
               co_return json::value(json::object());
             }});

  table.add({"query-nbd-exports", {}, [registry](const json::object&) -> awaitable<QmpResult> {
               json::array out;
               for (const auto& e : registry->exports()) {
                 json::array clients;
                 for (const ClientInfo& c : registry->clients(e->name())) clients.push_back(client_object(c));
                 out.push_back(json::object{{"name", e->name()},
                                            {"device", e->disk_name()},
                                            {"writable", e->writable()},
                                            {"description", e->description()},
                                            {"size", e->device()->size()},
                                            {"clients", std::move(clients)}});
               }
               co_return json::value(std::move(out));
             }});

  table.add({"query-stats", {}, [registry](const json::object&) -> awaitable<QmpResult> {
               json::array exports;
               for (const auto& e : registry->exports()) {
                 const ExportStatsSnapshot s = e->stats().snapshot();
                 exports.push_back(json::object{
                     {"name", e->name()},
                     {"read-requests", s.read_requests},
                     {"read-bytes", s.read_bytes},
                     {"write-requests", s.write_requests},
                     {"write-bytes", s.write_bytes},
                     {"flush-requests", s.flush_requests},
                     {"trim-requests", s.trim_requests},
                     {"zero-requests", s.zero_requests},
                     {"block-status-requests", s.block_status_requests},
                     {"cache-requests", s.cache_requests},
                     {"errors", s.errors},
                     {"in-flight", s.in_flight},
                     {"read-latency-p50-us", s.read_p50_us},
                     {"read-latency-p99-us", s.read_p99_us},
                     {"write-latency-p50-us", s.write_p50_us},
                     {"write-latency-p99-us", s.write_p99_us},
                     {"clients", registry->clients(e->name()).size()}});
               }
               co_return json::value(json::object{{"exports", std::move(exports)}});
             }});
}

}  // namespace fleece::server
