#include "snapshot/chain_snapshot.hpp"

#include "block/raw_file.hpp"
#include "cow/qcow2_image.hpp"
#include "util/errors.hpp"
#include "util/log.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

namespace fleece::snapshot {

using block::Task;

namespace {

std::error_code fail(std::string* why, std::error_code ec, std::string message) {
  if (why) *why = std::move(message);
  return ec;
}

// Writes what the layer holds to disk; on failure says so in *why.
Task<std::error_code> flush_layer(const cow::ChainLayer& layer, std::string* why) {
  auto ec = co_await layer.device->flush();
  if (ec) fail(why, ec, fmt::format("{}: flushing before the snapshot: {}", layer.path, ec.message()));
  co_return ec;
}

}  // namespace

Task<std::error_code> take_chain_snapshot(std::shared_ptr<cow::BackingChain> chain,
                                          ChainSnapshotOptions options, std::string* why,
                                          Quiesce quiesce) {
  const std::string& file = options.file;
  if (options.format != "qcow2")
    co_return fail(why, make_error_code(Errc::unsupported_feature),
                   fmt::format("{}: snapshot format '{}' is not supported (qcow2)", file,
                               options.format));
  if (chain->options().read_only)
    co_return fail(why, std::make_error_code(std::errc::read_only_file_system),
                   fmt::format("{}: the disk is read-only; a snapshot overlay would never be "
                               "written",
                               file));
  const cow::ChainLayer old = chain->layers().front();

  // The overlay is made before writes are held; only its size depends on
  // the disk, and that does not change under a live snapshot.
  const int fd = ::open(file.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int e = errno;
    co_return fail(why, {e, std::generic_category()},
                   fmt::format("{}: cannot create the snapshot file: {}{}", file, std::strerror(e),
                               e == EEXIST ? "; remove it or choose another name" : ""));
  }
  ::close(fd);
  struct Remove {  // the new file goes unless the snapshot took effect
    const std::string& path;
    bool keep = false;
    ~Remove() {
      if (!keep) ::unlink(path.c_str());
    }
  } remove{file};

  std::string msg;
  auto raw = block::open_raw_file(file, {.read_only = false, .direct = chain->options().direct},
                                  &msg);
  if (!raw) co_return fail(why, raw.error(), msg);
  cow::Qcow2CreateOptions co{.virtual_size = old.device->size(),
                             .cluster_size = options.cluster_size,
                             .backing_file = cow::backing_name_for(file, old.path),
                             .backing_format = old.format};
  const std::string recorded = co.backing_file;
  auto overlay = co_await cow::Qcow2Image::create(*raw, co);
  if (!overlay)
    co_return fail(why, overlay.error(),
                   fmt::format("{}: cannot create the qcow2 overlay: {}", file,
                               overlay.error().message()));
  if (auto ec = co_await (*overlay)->flush())
    co_return fail(why, ec, fmt::format("{}: cannot write the new overlay: {}", file,
                                        ec.message()));

  // Most of what the guest wrote goes to disk before its writes are held,
  // so that the flush inside the drain below has only the last moment's.
  if (auto ec = co_await flush_layer(old, why)) co_return ec;

  if (quiesce.drain) co_await quiesce.drain();
  struct Resume {
    Quiesce& q;
    ~Resume() {
      if (q.resume) q.resume();
    }
  } resume{quiesce};

  // The old active layer: everything written to it on disk, then reopened
  // read-only so nothing can change it any more.
  if (auto ec = co_await flush_layer(old, why)) co_return ec;
  std::string reason;
  auto ro = co_await cow::open_image(old.path, old.format, true, chain->options().direct,
                                     &reason);
  if (!ro) co_return fail(why, ro.error(), reason);
  (*overlay)->set_backing(ro->device);

  cow::ChainLayer layer{.path = file, .format = "qcow2", .backing_name = recorded,
                        .backing_format = old.format, .read_only = false,
                        .device = *overlay, .qcow2 = *overlay};
  if (!chain->replace_device(old.path, *ro, true))
    co_return fail(why, std::make_error_code(std::errc::device_or_resource_busy),
                   fmt::format("{}: the active layer changed during the snapshot; retry",
                               old.path));
  chain->push_active(std::move(layer));
  remove.keep = true;
  FLEECE_LOG_INFO("snapshot", "{} is the active layer, backed by {}", file, old.path);
  co_return std::error_code{};
}

}  // namespace fleece::snapshot
