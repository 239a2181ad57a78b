// blockdev-add, blockdev-del, query-block: the disk table at run time.
// query-block shows each disk with its backing chain as QEMU does: the
// active layer in "inserted", the layers below nested as "backing-image".
#include "cow/backing_chain.hpp"
#include "server/disk_table.hpp"
#include "server/export_registry.hpp"
#include "server/qmp_arguments.hpp"
#include "server/qmp_bitmaps.hpp"
#include "server/disk_bitmaps.hpp"
#include "server/fleece_table.hpp"
#include "server/qmp_commands.hpp"
#include "util/log.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace fleece::server {

namespace json = boost::json;
using boost::asio::awaitable;

namespace {

std::string_view format_name(DiskFormat format) { return format == DiskFormat::qcow2 ? "qcow2" : "raw"; }

std::vector<std::string> exports_of(const ExportRegistry& registry, std::string_view node) {
  std::vector<std::string> names;
  for (const auto& e : registry.exports()) {
    if (e->disk_name() == node) names.push_back(e->name());
  }
  return names;
}

std::vector<QmpParam> blockdev_add_params() {
  QmpParam driver = qmp_required("driver", QmpType::string);
  driver.choices = {"file", "raw", "qcow2"};
  QmpParam cache = qmp_optional("cache", QmpType::object);
  cache.members = {qmp_optional("direct", QmpType::boolean), qmp_optional("no-flush", QmpType::boolean)};
  return {qmp_required("node-name", QmpType::string), driver, qmp_required("filename", QmpType::string),
          qmp_optional("read-only", QmpType::boolean), cache, qmp_optional("l2-cache-size", QmpType::integer)};
}

// QEMU's ImageInfo, with the layers below nested as "backing-image".
json::object image_info(const cow::ChainImageInfo& info) {
  json::object out{{"filename", info.filename},
                   {"format", info.format},
                   {"virtual-size", info.virtual_size},
                   {"actual-size", info.actual_size}};
  if (info.cluster_size) out["cluster-size"] = info.cluster_size;
  if (!info.backing_filename.empty()) {
    out["backing-filename"] = info.backing_filename;
    out["full-backing-filename"] = info.full_backing_filename;
    if (!info.backing_filename_format.empty()) out["backing-filename-format"] = info.backing_filename_format;
  }
  if (info.backing_image) out["backing-image"] = image_info(*info.backing_image);
  return out;
}

}  // namespace

void register_block_commands(QmpCommandTable& table, const QmpServices& services) {
  DiskTable* disks = services.disks;
  ExportRegistry* registry = services.registry;
  FleeceTable* fleeces = services.fleeces;

  table.add({"blockdev-add", blockdev_add_params(),
             [disks, fleeces](const json::object& args) -> awaitable<QmpResult> {
               DiskSpec spec;
               spec.name = qmp_arg_string(args, "node-name");
               spec.path = qmp_arg_string(args, "filename");
               spec.format = qmp_arg_string(args, "driver") == "qcow2" ? DiskFormat::qcow2 : DiskFormat::raw;
               spec.read_only = qmp_arg_bool(args, "read-only", false);
               if (const json::value* cache = args.if_contains("cache")) {
                 if (qmp_arg_bool(cache->get_object(), "direct", false)) spec.cache = CacheMode::none;
                 if (qmp_arg_bool(cache->get_object(), "no-flush", false)) {
                   co_return QmpError::generic("cache.no-flush is not supported: fleece always honours flushes");
                 }
               }
               if (args.contains("l2-cache-size")) {
                 // A qcow2 option, as in QEMU: no other driver has an L2 table.
                 if (spec.format != DiskFormat::qcow2) co_return QmpError::generic("Invalid parameter 'l2-cache-size'");
                 const int64_t bytes = qmp_arg_int(args, "l2-cache-size", 0);
                 if (bytes < 0) co_return QmpError::generic("Parameter 'l2-cache-size' expects a non-negative value");
                 spec.l2_cache_bytes = static_cast<uint64_t>(bytes);
               }
               if (spec.name.empty()) co_return QmpError::generic("Parameter 'node-name' must not be empty");
               if (disks->find(spec.name)) {
                 co_return QmpError::generic(fmt::format("Duplicate nodes with node-name='{}'", spec.name));
               }
               // Opening reads a few headers per layer: quick enough for the QMP strand.
               std::string message;
               auto disk = open_disk(spec, &message);
               if (!disk) co_return QmpError::generic(message);
               if (auto ec = disks->add(std::move(*disk))) {
                 co_return QmpError::generic(fmt::format("Duplicate nodes with node-name='{}'", spec.name));
               }
               FLEECE_LOG_INFO("qmp", "blockdev-add {}: {} ({})", spec.name, spec.path, format_name(spec.format));
               // Stores a killed server left beside this disk (start-up sweeps only --disk disks).
               if (auto added = disks->find(spec.name); added && fleeces) fleeces->remove_stale_stores({*added});
               co_return json::value(json::object());
             }});

  table.add({"blockdev-del", {qmp_required("node-name", QmpType::string)},
             [disks, registry](const json::object& args) -> awaitable<QmpResult> {
               const std::string name = qmp_arg_string(args, "node-name");
               if (!disks->find(name)) {
                 co_return QmpError::generic(fmt::format("Failed to find node with node-name='{}'", name));
               }
               auto exported = exports_of(*registry, name);
               if (!exported.empty()) {
                 co_return QmpError::generic(fmt::format(
                     "Node '{}' is busy: exported over NBD as '{}'; remove the export first (nbd-server-remove)",
                     name, fmt::join(exported, "', '")));
               }
               if (auto d = disks->find(name); d && d->chain && d->chain->job()) {
                 co_return QmpError::generic(fmt::format(
                     "Node '{}' is busy: block device is in use by block job: commit ('{}'); cancel it first "
                     "(block-job-cancel)", name, *d->chain->job()));
               }
               if (auto d = disks->find(name); d && d->bitmaps) {  // persistent bitmaps, in_use cleared
                 if (auto ec = co_await d->bitmaps->persist()) {
                   FLEECE_LOG_WARN("qmp", "blockdev-del {}: lost persistent bitmaps: {}", name, ec.message());
                 }
               }
               if (disks->remove(name)) {
                 co_return QmpError::generic(fmt::format("Failed to find node with node-name='{}'", name));
               }
               FLEECE_LOG_INFO("qmp", "blockdev-del {}", name);
               co_return json::value(json::object());
             }});

  table.add({"query-block", {}, [disks, registry](const json::object&) -> awaitable<QmpResult> {
               json::array out;
               for (const Disk& disk : disks->list()) {
                 const bool read_only = disk.spec.read_only || disk.device->capabilities().read_only;
                 json::array exported;
                 for (auto& name : exports_of(*registry, disk.name)) exported.push_back(json::string(name));
                 json::object inserted{{"node-name", disk.name},
                                       {"ro", read_only},
                                       {"encrypted", false},
                                       {"detect_zeroes", "off"},
                                       {"cache", {{"writeback", disk.spec.cache == CacheMode::writeback},
                                                  {"direct", disk.spec.cache == CacheMode::none},
                                                  {"no-flush", false}}}};
                 if (disk.chain) {
                   const cow::ChainImageInfo top = disk.chain->describe();
                   inserted["file"] = top.filename;
                   inserted["drv"] = top.format;
                   if (!top.backing_filename.empty()) inserted["backing_file"] = top.backing_filename;
                   inserted["backing_file_depth"] = disk.chain->length() - 1;
                   inserted["image"] = image_info(top);
                 } else {
                   inserted["file"] = disk.spec.path;
                   inserted["drv"] = format_name(disk.spec.format);
                   inserted["backing_file_depth"] = 0;
                   inserted["image"] = json::object{{"filename", disk.spec.path},
                                                    {"format", format_name(disk.spec.format)},
                                                    {"virtual-size", disk.device->size()}};
                 }
                 if (auto bitmaps = dirty_bitmaps_info(disk); !bitmaps.empty()) {
                   inserted["dirty-bitmaps"] = std::move(bitmaps);
                 }
                 out.push_back(json::object{{"device", disk.name},
                                            {"type", "unknown"},
                                            {"removable", false},
                                            {"locked", false},
                                            {"inserted", std::move(inserted)},
                                            {"exports", std::move(exported)}});
               }
               co_return json::value(std::move(out));
             }});
}

}  // namespace fleece::server
