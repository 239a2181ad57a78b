#include "server/qmp_bitmaps.hpp"

#include "cow/bitmap_filter.hpp"
#include "server/dirty_bitmap_context.hpp"
#include "server/disk_bitmaps.hpp"
#include "server/disk_table.hpp"
#include "util/log.hpp"

#include <fmt/format.h>

#include <set>

namespace fleece::server {

namespace json = boost::json;

json::array dirty_bitmaps_info(const Disk& disk) {
  json::array out;
  if (!disk.bitmaps) return out;
  for (const auto& e : disk.bitmaps->list()) {
    const auto& b = *e.bitmap;
    json::object o{{"name", e.name},
                   {"granularity", b.granularity()},
                   {"count", b.dirty_bytes()},
                   {"recording", b.enabled()},
                   {"persistent", b.persistent()},
                   {"busy", e.busy}};
    if (b.inconsistent()) o["inconsistent"] = true;
    if (e.frozen) o["frozen"] = true;
    out.push_back(std::move(o));
  }
  return out;
}

std::variant<MetaContexts, QmpError> export_bitmap_contexts(const Disk& disk, const json::value* bitmaps,
                                                            bool writable) {
  MetaContexts out;
  if (!bitmaps) return out;
  const json::array& names = bitmaps->get_array();
  std::set<std::string> seen;
  for (size_t i = 0; i < names.size(); ++i) {
    if (!names[i].is_string()) {
      return QmpError::generic(fmt::format("Invalid parameter type for 'bitmaps[{}]', expected: string", i));
    }
    const std::string name(names[i].get_string());
    auto found = disk.bitmaps ? disk.bitmaps->find(name) : std::nullopt;
    if (!found) return QmpError::generic(fmt::format("Bitmap '{}' is not found", name));
    if (!seen.insert(name).second) return QmpError::generic(fmt::format("Bitmap '{}' is listed twice", name));
    if (found->busy) {
      return QmpError::generic(fmt::format(
          "Bitmap '{}' is currently in use by another operation and cannot be used", name));
    }
    if (found->bitmap->inconsistent()) {
      return QmpError::generic(fmt::format(
          "Bitmap '{}' is inconsistent and cannot be used; block-dirty-bitmap-remove deletes it", name));
    }
    if (writable && found->bitmap->enabled()) {
      return QmpError::generic(fmt::format("Enabled bitmap '{}' incompatible with writable export", name));
    }
    out.push_back(std::make_shared<DirtyBitmapContext>(name, found->bitmap, disk.bitmaps->hold(name)));
  }
  return out;
}

std::variant<std::shared_ptr<FleeceBitmaps>, QmpError> FleeceBitmaps::prepare(
    DiskTable& disks, const std::string& id, const std::vector<std::string>& devices,
    const json::value* bitmaps) {
  auto out = std::make_shared<FleeceBitmaps>();
  out->id_ = id;
  if (!bitmaps) return out;
  const json::array& list = bitmaps->get_array();
  for (size_t i = 0; i < list.size(); ++i) {
    const json::object* o = list[i].if_object();
    if (!o) return QmpError::generic(fmt::format("Invalid parameter type for 'bitmaps[{}]', expected: object", i));
    for (const char* key : {"node", "name"}) {
      const json::value* v = o->if_contains(key);
      if (!v) return QmpError::generic(fmt::format("Parameter 'bitmaps[{}].{}' is missing", i, key));
      if (!v->is_string()) {
        return QmpError::generic(fmt::format("Invalid parameter type for 'bitmaps[{}].{}', expected: string", i, key));
      }
    }
    for (const auto& kv : *o) {
      if (kv.key() != "node" && kv.key() != "name") {
        return QmpError::generic(fmt::format("Parameter 'bitmaps[{}].{}' is unexpected", i, std::string(kv.key())));
      }
    }
    Item item{std::string(o->at("node").get_string()), std::string(o->at("name").get_string()), nullptr, nullptr, nullptr};
    if (std::find(devices.begin(), devices.end(), item.node) == devices.end()) {
      return QmpError::generic(fmt::format(
          "Bitmap node '{}' is not one of the fleece's 'devices'; a bitmap freezes with its disk", item.node));
    }
    auto disk = disks.find(item.node);
    if (!disk || !disk->bitmaps) return QmpError::generic(fmt::format("Node '{}' not found", item.node));
    for (const auto& other : out->items_) {
      if (other.node == item.node && other.name == item.name) {
        return QmpError::generic(fmt::format("Bitmap '{}' of node '{}' is listed twice", item.name, item.node));
      }
    }
    auto found = disk->bitmaps->find(item.name);
    if (!found || found->frozen) return QmpError::generic(fmt::format("Dirty bitmap '{}' not found", item.name));
    if (found->bitmap->inconsistent()) {
      return QmpError::generic(fmt::format(
          "Bitmap '{}' is inconsistent and cannot be used; block-dirty-bitmap-remove deletes it "
          "(then take a full backup)", item.name));
    }
    if (found->busy) {
      return QmpError::generic(fmt::format(
          "Bitmap '{}' is currently in use by another operation and cannot be used", item.name));
    }
    if (!found->bitmap->enabled()) {
      return QmpError::generic(fmt::format(
          "Bitmap '{}' is disabled: it records nothing to freeze; enable it (block-dirty-bitmap-enable)", item.name));
    }
    const std::string listed = fmt::format("{}@{}", item.name, id);
    if (disk->bitmaps->find(listed)) {
      return QmpError::generic(fmt::format(
          "Bitmap already exists: {} (the frozen half of an earlier fleece '{}'; remove or merge it first)",
          listed, id));
    }
    item.bitmaps = disk->bitmaps;
    item.fresh = found->bitmap->fresh_like();
    out->items_.push_back(std::move(item));
  }
  return out;
}

std::error_code FleeceBitmaps::freeze() {
  for (auto& item : items_) {
    auto live = item.bitmaps->filter()->find(item.name);
    if (live && item.fresh) item.fresh->set_enabled(live->enabled());
    auto frozen = item.bitmaps->filter()->swap(item.name, std::move(item.fresh));
    if (!frozen) {
      rollback();
      return frozen.error();
    }
    item.frozen = *frozen;
  }
  return {};
}

MetaContexts FleeceBitmaps::contexts(const std::string& device) {
  MetaContexts out;
  for (auto& item : items_) {
    if (item.node != device || !item.frozen) continue;
    out.push_back(std::make_shared<DirtyBitmapContext>(
        item.name, item.frozen, item.bitmaps->hold(fmt::format("{}@{}", item.name, id_))));
  }
  return out;
}

void FleeceBitmaps::commit() {
  for (auto& item : items_) {
    if (!item.frozen) continue;
    const std::string listed = fmt::format("{}@{}", item.name, id_);
    if (auto ec = item.bitmaps->add_frozen(listed, item.frozen)) {
      FLEECE_LOG_WARN("bitmap", "fleece {}: cannot list '{}': {}; merging it back into '{}'", id_, listed,
                      ec.message(), item.name);
      if (auto live = item.bitmaps->filter()->find(item.name)) live->merge_from(*item.frozen);
    }
  }
}

void FleeceBitmaps::rollback() {
  for (auto& item : items_) {
    if (!item.frozen) continue;
    if (auto live = item.bitmaps->filter()->find(item.name)) live->merge_from(*item.frozen);
    item.frozen = nullptr;
  }
}

}  // namespace fleece::server
