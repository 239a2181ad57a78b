// fleece-start, fleece-stop, query-fleeces: the fleece table at run time.
#include "server/fleece_table.hpp"
#include "server/qmp_arguments.hpp"
#include "server/qmp_bitmaps.hpp"
#include "server/qmp_commands.hpp"
#include "util/log.hpp"

#include <fmt/format.h>

#include <variant>

namespace fleece::server {

namespace json = boost::json;
using boost::asio::awaitable;

namespace {

std::vector<QmpParam> fleece_start_params() {
  QmpParam on_error = qmp_optional("on-cbw-error", QmpType::string);
  on_error.choices = {"break-snapshot", "break-guest-write"};
  return {qmp_required("id", QmpType::string),
          qmp_required("devices", QmpType::array),
          on_error,
          qmp_optional("cbw-timeout", QmpType::integer),
          qmp_optional("max-store-bytes", QmpType::integer),
          qmp_optional("cluster-size", QmpType::integer),
          qmp_optional("granularity", QmpType::integer),
          qmp_optional("bitmaps", QmpType::array)};
}

QmpError to_qmp(const FleeceError& e) {
  return e.kind == FleeceError::Kind::device_not_found ? QmpError::device_not_found(e.message)
                                                       : QmpError::generic(e.message);
}

// The request, or the error naming the bad argument.
std::variant<FleeceStartRequest, QmpError> read_start_request(const json::object& args) {
  FleeceStartRequest request;
  request.id = qmp_arg_string(args, "id");
  const json::array& devices = args.at("devices").get_array();
  for (size_t i = 0; i < devices.size(); ++i) {
    if (!devices[i].is_string()) {
      return QmpError::generic(fmt::format("Invalid parameter type for 'devices[{}]', expected: string", i));
    }
    request.devices.emplace_back(devices[i].get_string());
  }
  if (qmp_arg_string(args, "on-cbw-error", "break-snapshot") == "break-guest-write") {
    request.policy.on_error = cow::OnCbwError::break_guest_write;
  }
  const int64_t timeout = qmp_arg_int(args, "cbw-timeout", 0);
  const int64_t max_bytes = qmp_arg_int(args, "max-store-bytes", 0);
  const int64_t cluster = qmp_arg_int(args, "cluster-size", 0);
  if (timeout < 0) return QmpError::generic("Parameter 'cbw-timeout' must be >= 0 (milliseconds; 0 = none)");
  if (max_bytes < 0) return QmpError::generic("Parameter 'max-store-bytes' must be >= 0 (0 = unlimited)");
  if (qmp_has_arg(args, "cluster-size") && (cluster <= 0 || cluster > (int64_t{1} << 31))) {
    return QmpError::generic(fmt::format(
        "Parameter 'cluster-size' must be a power of two from 4096 to 2097152, got {}", cluster));
  }
  request.policy.cbw_timeout = std::chrono::milliseconds(timeout);
  request.policy.max_store_bytes = static_cast<uint64_t>(max_bytes);
  const int64_t granularity = qmp_arg_int(args, "granularity", 0);
  if (qmp_has_arg(args, "granularity") && (granularity <= 0 || granularity > (int64_t{1} << 31))) {
    return QmpError::generic(fmt::format(
        "Parameter 'granularity' must be a power of two from 4096 to cluster-size, got {}", granularity));
  }
  request.cluster_size = static_cast<uint32_t>(cluster);
  request.granularity = static_cast<uint32_t>(granularity);
  return request;
}

json::object member_object(const FleeceMemberInfo& m) {
  json::array clients;
  for (const ClientInfo& c : m.clients) {
    clients.push_back(json::object{{"id", c.id}, {"address", c.peer}, {"read-bytes", c.read_bytes}});
  }
  const cow::SnapshotStats& s = m.stats;
  return {{"device", m.device},
          {"export", m.export_name},
          {"store", m.store},
          {"cluster-size", m.cluster_size},
          {"granularity", m.granularity},
          {"preserved-bytes", s.preserved_bytes},
          {"preserved-clusters", s.copies},
          {"zero-clusters", s.zero_marks},
          {"freed-clusters", s.freed_clusters},
          {"store-bytes", s.stored_bytes},
          {"read-bytes", m.read_bytes},
          {"clients", std::move(clients)},
          {"broken", s.broken},
          {"broken-reason", s.broken ? s.broken_reason.message() : std::string()}};
}

}  // namespace

void register_fleece_commands(QmpCommandTable& table, const QmpServices& services) {
  FleeceTable* fleeces = services.fleeces;
  DiskTable* disks = services.disks;
  if (!fleeces) return;

  table.add({"fleece-start", fleece_start_params(), [fleeces, disks](const json::object& args) -> awaitable<QmpResult> {
               auto parsed = read_start_request(args);
               if (auto* error = std::get_if<QmpError>(&parsed)) co_return *error;
               FleeceStartRequest request = std::get<FleeceStartRequest>(std::move(parsed));
               // Dirty bitmaps freeze at the point in time (server/qmp_bitmaps.hpp).
               auto prepared = FleeceBitmaps::prepare(*disks, request.id, request.devices, args.if_contains("bitmaps"));
               if (auto* error = std::get_if<QmpError>(&prepared)) co_return *error;
               auto bitmaps = std::get<std::shared_ptr<FleeceBitmaps>>(std::move(prepared));
               if (!bitmaps->empty()) {
                 request.at_point_in_time = [bitmaps] { return bitmaps->freeze(); };
                 request.view_contexts = [bitmaps](const std::string& device) { return bitmaps->contexts(device); };
               }
               FleeceStarted started = co_await fleeces->start(request);
               if (started.error) bitmaps->rollback();
               else bitmaps->commit();
               if (started.error) co_return to_qmp(*started.error);
               json::array exports;
               for (const auto& e : started.exports) exports.push_back(json::string(e));
               co_return json::value(json::object{{"exports", std::move(exports)},
                                                  {"write-pause-us", started.write_pause.count()}});
             }});

  table.add({"fleece-stop", {qmp_required("id", QmpType::string)},
             [fleeces](const json::object& args) -> awaitable<QmpResult> {
               std::string id = qmp_arg_string(args, "id");
               auto error = co_await fleeces->stop(id);
               if (error) co_return to_qmp(*error);
               co_return json::value(json::object());
             }});

  table.add({"query-fleeces", {}, [fleeces](const json::object&) -> awaitable<QmpResult> {
               json::array out;
               for (const FleeceInfo& f : fleeces->list()) {
                 json::array devices;
                 for (const auto& m : f.members) devices.push_back(member_object(m));
                 out.push_back(json::object{
                     {"id", f.id},
                     {"devices", std::move(devices)},
                     {"write-pause-us", f.write_pause.count()},
                     {"on-cbw-error", f.policy.on_error == cow::OnCbwError::break_guest_write
                                          ? "break-guest-write" : "break-snapshot"},
                     {"cbw-timeout", f.policy.cbw_timeout.count()},
                     {"max-store-bytes", f.policy.max_store_bytes}});
               }
               co_return json::value(std::move(out));
             }});
}

}  // namespace fleece::server
