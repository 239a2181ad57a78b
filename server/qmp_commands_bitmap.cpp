// block-dirty-bitmap-add, -remove, -clear, -enable, -disable, -merge: the
// disks' dirty bitmaps at run time, with QEMU's arguments and error texts
// (qapi/block-core.json, block/monitor/bitmap-qmp-cmds.c).
//
// A frozen bitmap (NAME@ID, left by fleece-start) is QEMU's "readonly":
// it can be a merge source and be removed, nothing else. A busy one
// (exported over NBD) can only be a merge source. An inconsistent one
// (in use at a crash) can only be removed.
#include "cow/bitmap_filter.hpp"
#include "cow/dirty_bitmap.hpp"
#include "server/disk_bitmaps.hpp"
#include "server/disk_table.hpp"
#include "server/qmp_arguments.hpp"
#include "server/qmp_commands.hpp"
#include "util/log.hpp"

#include <fmt/format.h>

#include <variant>

namespace fleece::server {

namespace json = boost::json;
using boost::asio::awaitable;

namespace {

enum Check : unsigned { kBusy = 1, kReadOnly = 2, kInconsistent = 4, kDefault = 7, kAllowReadOnly = 5 };

struct Found {
  Disk disk;
  DiskBitmaps::Entry entry;
};

std::variant<Found, QmpError> lookup(DiskTable& disks, const std::string& node, const std::string& name) {
  auto disk = disks.find(node);
  if (!disk || !disk->bitmaps) return QmpError::generic(fmt::format("Node '{}' not found", node));
  auto entry = disk->bitmaps->find(name);
  if (!entry) return QmpError::generic(fmt::format("Dirty bitmap '{}' not found", name));
  return Found{std::move(*disk), std::move(*entry)};
}

std::optional<QmpError> check(const DiskBitmaps::Entry& e, unsigned flags) {
  if ((flags & kBusy) && e.busy) {
    return QmpError::generic(fmt::format(
        "Bitmap '{}' is currently in use by another operation and cannot be used", e.name));
  }
  if ((flags & kReadOnly) && e.frozen) {
    return QmpError::generic(fmt::format("Bitmap '{}' is readonly and cannot be modified", e.name));
  }
  if ((flags & kInconsistent) && e.bitmap->inconsistent()) {
    return QmpError::generic(fmt::format(
        "Bitmap '{}' is inconsistent and cannot be used; try block-dirty-bitmap-remove to delete "
        "this bitmap from disk", e.name));
  }
  return std::nullopt;
}

// lookup() of args' "node" and args[name_key], then check(flags).
std::variant<Found, QmpError> lookup_checked(DiskTable& disks, const json::object& args, std::string_view name_key,
                                             unsigned flags) {
  auto found = lookup(disks, qmp_arg_string(args, "node"), qmp_arg_string(args, name_key));
  if (auto* f = std::get_if<Found>(&found)) {
    if (auto error = check(f->entry, flags)) return *error;
  }
  return found;
}

std::vector<QmpParam> node_name_params() {
  return {qmp_required("node", QmpType::string), qmp_required("name", QmpType::string)};
}

// The handlers that look a bitmap up, check it, and act on it at once.
using SimpleAction = std::function<std::error_code(const Found&)>;
QmpHandler simple_handler(DiskTable* disks, unsigned flags, std::string what, SimpleAction action) {
  return [disks, flags, what, action](const json::object& args) -> awaitable<QmpResult> {
    auto found = lookup_checked(*disks, args, "name", flags);
    if (auto* error = std::get_if<QmpError>(&found)) co_return *error;
    const Found& f = std::get<Found>(found);
    if (auto ec = action(f)) co_return QmpError::generic(fmt::format("Bitmap '{}': {}", f.entry.name, ec.message()));
    FLEECE_LOG_INFO("qmp", "{} {} on {}", what, f.entry.name, f.disk.name);
    co_return json::value(json::object());
  };
}

awaitable<QmpResult> add_bitmap(DiskTable& disks, const json::object& args) {
  const std::string node = qmp_arg_string(args, "node");
  const std::string name = qmp_arg_string(args, "name");
  if (name.empty()) co_return QmpError::generic("Bitmap name cannot be empty");
  auto disk = disks.find(node);
  if (!disk || !disk->bitmaps) {
    co_return QmpError::generic(fmt::format("Cannot find device='{}' nor node-name='{}'", node, node));
  }
  const int64_t granularity = qmp_arg_int(args, "granularity", int64_t(cow::DirtyBitmap::kDefaultGranularity));
  if (granularity < 0 || !cow::DirtyBitmap::valid_granularity(uint64_t(granularity))) {
    co_return QmpError::generic("Granularity must be power of 2 and at least 512");
  }
  const bool persistent = qmp_arg_bool(args, "persistent", false);
  const bool disabled = qmp_arg_bool(args, "disabled", false);
  if (persistent) {
    std::string why;
    if (!disk->bitmaps->can_persist(&why)) {
      co_return QmpError::generic(fmt::format("Can't make bitmap '{}' persistent in '{}': {}", name, node, why));
    }
  }
  if (disk->bitmaps->find(name)) co_return QmpError::generic(fmt::format("Bitmap already exists: {}", name));
  if (name.size() > cow::DirtyBitmap::kMaxNameLength) {
    co_return QmpError::generic(fmt::format("Bitmap name too long: {}", name));
  }
  auto bitmap = cow::DirtyBitmap::create(name, disk->device->size(), uint64_t(granularity));
  if (!bitmap) {
    co_return QmpError::generic(fmt::format("Cannot create bitmap '{}' on '{}': {}", name, node,
                                            bitmap.error() == std::errc::file_too_large
                                                ? "too many granules; use a larger granularity"
                                                : bitmap.error().message()));
  }
  (*bitmap)->set_persistent(persistent);
  (*bitmap)->set_enabled(!disabled);
  if (disk->bitmaps->add(*bitmap)) co_return QmpError::generic(fmt::format("Bitmap already exists: {}", name));
  FLEECE_LOG_INFO("qmp", "block-dirty-bitmap-add {} on {} (granularity {}{}{})", name, node, granularity,
                  persistent ? ", persistent" : "", disabled ? ", disabled" : "");
  co_return json::value(json::object());
}

awaitable<QmpResult> remove_bitmap(DiskTable& disks, const json::object& args) {
  const std::string node = qmp_arg_string(args, "node");
  const std::string name = qmp_arg_string(args, "name");
  auto found = lookup_checked(disks, args, "name", kBusy);
  if (auto* error = std::get_if<QmpError>(&found)) co_return *error;
  const Found f = std::get<Found>(std::move(found));
  if (f.entry.bitmap->persistent()) {
    if (auto ec = co_await f.disk.bitmaps->unstore(name)) {
      co_return QmpError::generic(fmt::format("Failed to remove bitmap '{}' from '{}': {}", name, node, ec.message()));
    }
  }
  f.disk.bitmaps->remove(name);
  FLEECE_LOG_INFO("qmp", "block-dirty-bitmap-remove {} on {}", name, node);
  co_return json::value(json::object());
}

awaitable<QmpResult> merge_bitmaps(DiskTable& disks, const json::object& args) {
  const std::string node = qmp_arg_string(args, "node");
  const std::string target = qmp_arg_string(args, "target");
  auto found = lookup_checked(disks, args, "target", kDefault);
  if (auto* error = std::get_if<QmpError>(&found)) co_return *error;
  const Found dst = std::get<Found>(std::move(found));
  const cow::DirtyBitmap& d = *dst.entry.bitmap;
  auto anon = cow::DirtyBitmap::create(d.name(), d.size(), d.granularity());
  if (!anon) co_return QmpError::generic(fmt::format("Cannot merge into '{}': {}", target, anon.error().message()));
  const json::array& sources = args.at("bitmaps").get_array();
  for (size_t i = 0; i < sources.size(); ++i) {
    std::string src_node = node, src_name;
    if (sources[i].is_string()) {
      src_name = std::string(sources[i].get_string());
    } else if (const json::object* o = sources[i].if_object();
               o && o->size() == 2 && o->contains("node") && o->contains("name") && o->at("node").is_string() &&
               o->at("name").is_string()) {
      src_node = std::string(o->at("node").get_string());
      src_name = std::string(o->at("name").get_string());
    } else {
      co_return QmpError::generic(fmt::format(
          "Invalid parameter type for 'bitmaps[{}]', expected: string or object {{\"node\", \"name\"}}", i));
    }
    auto src = lookup(disks, src_node, src_name);
    if (auto* error = std::get_if<QmpError>(&src)) co_return *error;
    const Found& s = std::get<Found>(src);
    if (auto error = check(s.entry, kInconsistent)) co_return *error;
    if ((*anon)->merge_from(*s.entry.bitmap)) co_return QmpError::generic("Bitmaps are incompatible and can't be merged");
  }
  // The target changes only once every source was read.
  if (auto ec = dst.entry.bitmap->merge_from(**anon)) {
    co_return QmpError::generic(fmt::format("Cannot merge into '{}': {}", target, ec.message()));
  }
  FLEECE_LOG_INFO("qmp", "block-dirty-bitmap-merge into {} on {} ({} source(s))", target, node, sources.size());
  co_return json::value(json::object());
}

}  // namespace

void register_bitmap_commands(QmpCommandTable& table, const QmpServices& services) {
  DiskTable* disks = services.disks;
  if (!disks) return;
  table.add({"block-dirty-bitmap-add",
             {qmp_required("node", QmpType::string), qmp_required("name", QmpType::string),
              qmp_optional("granularity", QmpType::integer), qmp_optional("persistent", QmpType::boolean),
              qmp_optional("disabled", QmpType::boolean)},
             [disks](const json::object& args) { return add_bitmap(*disks, args); }});
  table.add({"block-dirty-bitmap-remove", node_name_params(),
             [disks](const json::object& args) { return remove_bitmap(*disks, args); }});
  table.add({"block-dirty-bitmap-clear", node_name_params(),
             simple_handler(disks, kDefault, "block-dirty-bitmap-clear",
                            [](const Found& f) { return f.entry.bitmap->clear(); })});
  table.add({"block-dirty-bitmap-enable", node_name_params(),
             simple_handler(disks, kAllowReadOnly | kReadOnly, "block-dirty-bitmap-enable", [](const Found& f) {
               f.entry.bitmap->set_enabled(true);
               return std::error_code{};
             })});
  table.add({"block-dirty-bitmap-disable", node_name_params(),
             simple_handler(disks, kAllowReadOnly | kReadOnly, "block-dirty-bitmap-disable", [](const Found& f) {
               f.entry.bitmap->set_enabled(false);
               return std::error_code{};
             })});
  table.add({"block-dirty-bitmap-merge",
             {qmp_required("node", QmpType::string), qmp_required("target", QmpType::string),
              qmp_required("bitmaps", QmpType::array)},
             [disks](const json::object& args) { return merge_bitmaps(*disks, args); }});
}

}  // namespace fleece::server
