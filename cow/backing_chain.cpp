#include "cow/backing_chain.hpp"

#include "block/raw_file.hpp"
#include "cow/chain_device.hpp"
#include "cow/chain_raw_layer.hpp"
#include "util/errors.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>
#include <utility>

namespace fleece::cow {

using block::Task;
namespace fs = std::filesystem;

namespace {

std::error_code fail(std::string* why, std::error_code ec, std::string message) {
  if (why) *why = std::move(message);
  return ec;
}

std::string absolute_normal(std::string_view p) {
  std::error_code ec;
  fs::path a = fs::absolute(fs::path(p), ec);
  if (ec) a = fs::path(p);
  return a.lexically_normal().string();
}

// QEMU's rule: a relative backing name is relative to the directory of the
// image that records it, not to the working directory.
std::string resolve_backing(const std::string& image, const std::string& name) {
  fs::path n(name);
  if (n.is_absolute()) return n.lexically_normal().string();
  return (fs::path(image).parent_path() / n).lexically_normal().string();
}

}  // namespace

Result<std::string> probe_image_format(const std::string& path, std::string* why) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    return fail(why, {e, std::generic_category()},
                fmt::format("{}: cannot open to probe its format: {}", path, std::strerror(e)));
  }
  unsigned char magic[4] = {};
  const ssize_t n = ::pread(fd, magic, sizeof magic, 0);
  ::close(fd);
  if (n == 4 && magic[0] == 'Q' && magic[1] == 'F' && magic[2] == 'I' && magic[3] == 0xfb)
    return std::string("qcow2");
  return std::string("raw");
}

std::string backing_name_for(const std::string& overlay, const std::string& backing) {
  const fs::path o = absolute_normal(overlay), b = absolute_normal(backing);
  if (o.parent_path() == b.parent_path()) return b.filename().string();
  return b.string();
}

Task<Result<OpenedImage>> open_image(std::string path, std::string format, bool read_only,
                                     bool direct, std::string* why, bool keep_bitmaps,
                                     uint64_t l2_cache_bytes) {
  if (format != "raw" && format != "qcow2")
    co_return fail(why, make_error_code(Errc::unsupported_feature),
                   fmt::format("{}: format '{}' is not supported (raw or qcow2)", path, format));
  std::string msg;
  auto file = block::open_raw_file(path, {.read_only = read_only, .direct = direct}, &msg);
  if (!file) co_return fail(why, file.error(), msg);
  if (format == "raw") co_return OpenedImage{std::make_shared<ChainRawLayer>(*file), nullptr};
  std::string reason;
  const Qcow2OpenOptions options{
      .read_only = read_only, .keep_bitmaps = keep_bitmaps, .l2_cache_bytes = l2_cache_bytes};
  auto img = co_await Qcow2Image::open(*file, options, &reason);
  if (!img)
    co_return fail(why, img.error(),
                   fmt::format("{}: not a usable qcow2 image: {}", path,
                               reason.empty() ? img.error().message() : reason));
  co_return OpenedImage{*img, *img};
}

BackingChain::BackingChain(std::vector<ChainLayer> layers, ChainOpenOptions options)
    : layers_(std::move(layers)),
      device_(std::make_shared<ChainDevice>(layers_.front().device)),
      options_(options) {}

BackingChain::~BackingChain() = default;

Task<Result<std::shared_ptr<BackingChain>>> BackingChain::open(std::string path,
                                                               std::string format,
                                                               ChainOpenOptions options,
                                                               std::string* why) {
  if (format.empty()) {
    auto probed = probe_image_format(path, why);
    if (!probed) co_return probed.error();
    format = *probed;
  }
  std::vector<ChainLayer> layers;
  std::set<std::pair<dev_t, ino_t>> seen;
  std::string cur = path, cur_format = format;
  std::string above;  // the image that named `cur`
  for (;;) {
    if (layers.size() >= options.max_depth)
      co_return fail(why, make_error_code(Errc::unsupported_feature),
                     fmt::format("{}: backing chain of {} is deeper than {} images; shorten it "
                                 "with qemu-img commit or rebase",
                                 cur, path, options.max_depth));
    struct stat st {};
    if (::stat(cur.c_str(), &st) != 0) {
      const int e = errno;
      if (above.empty())
        co_return fail(why, {e, std::generic_category()},
                       fmt::format("{}: cannot open: {}", cur, std::strerror(e)));
      co_return fail(why, {e, std::generic_category()},
                     fmt::format("{}: backing file of {} cannot be opened: {}", cur, above,
                                 std::strerror(e)));
    }
    if (!seen.insert({st.st_dev, st.st_ino}).second)
      co_return fail(why, std::make_error_code(std::errc::too_many_symbolic_link_levels),
                     fmt::format("{}: backing chain loop: {} names it as its backing file but it "
                                 "is already in the chain",
                                 cur, above));
    const bool ro = layers.empty() ? options.read_only : true;
    const bool keep = layers.empty() && options.keep_bitmaps;
    auto img = co_await open_image(cur, cur_format, ro, options.direct, why, keep,
                                   options.l2_cache_bytes);
    if (!img) co_return img.error();
    ChainLayer layer{.path = cur, .format = cur_format, .read_only = ro,
                     .device = img->device, .qcow2 = img->qcow2};
    if (!img->qcow2) {
      layers.push_back(std::move(layer));
      break;
    }
    layer.backing_name = img->qcow2->backing_file();
    layer.backing_format = img->qcow2->backing_format();
    std::string name = layer.backing_name, bfmt = layer.backing_format;
    layers.push_back(std::move(layer));
    if (name.empty()) break;
    if (name.starts_with("json:") || name.find("://") != std::string::npos)
      co_return fail(why, make_error_code(Errc::unsupported_feature),
                     fmt::format("{}: backing file '{}' is not a local file; fleece opens local "
                                 "raw and qcow2 files only",
                                 cur, name));
    above = cur;
    cur = resolve_backing(above, name);
    if (bfmt.empty()) {
      auto probed = probe_image_format(cur, why);
      if (!probed) {
        if (why) *why = fmt::format("{} (backing file of {})", *why, above);
        co_return probed.error();
      }
      bfmt = *probed;
    } else if (bfmt != "raw" && bfmt != "qcow2") {
      co_return fail(why, make_error_code(Errc::unsupported_feature),
                     fmt::format("{}: backing format '{}' recorded in {} is not supported (raw or "
                                 "qcow2)",
                                 cur, bfmt, above));
    }
    cur_format = bfmt;
  }
  for (std::size_t i = 0; i + 1 < layers.size(); ++i)
    if (layers[i].qcow2) layers[i].qcow2->set_backing(layers[i + 1].device);
  co_return std::shared_ptr<BackingChain>(new BackingChain(std::move(layers), options));
}

std::shared_ptr<block::Device> BackingChain::device() const { return device_; }

std::shared_ptr<block::Device> BackingChain::active() const {
  std::lock_guard g(mu_);
  return layers_.front().device;
}

std::vector<ChainLayer> BackingChain::layers() const {
  std::lock_guard g(mu_);
  return layers_;
}

std::size_t BackingChain::length() const {
  std::lock_guard g(mu_);
  return layers_.size();
}

std::optional<std::size_t> BackingChain::index_of_path(std::string_view path) const {
  std::lock_guard g(mu_);
  for (std::size_t i = 0; i < layers_.size(); ++i)
    if (layers_[i].path == path) return i;
  return std::nullopt;
}

std::optional<std::size_t> BackingChain::find(std::string_view name) const {
  if (name.empty()) return std::nullopt;
  const std::string abs = absolute_normal(name);
  std::lock_guard g(mu_);
  for (std::size_t i = 0; i < layers_.size(); ++i)
    if (layers_[i].path == name) return i;
  for (std::size_t i = 0; i < layers_.size(); ++i)
    if (absolute_normal(layers_[i].path) == abs) return i;
  for (std::size_t i = 1; i < layers_.size(); ++i)
    if (layers_[i - 1].backing_name == name) return i;
  return std::nullopt;
}

Task<Result<uint32_t>> BackingChain::depth_of(uint64_t offset) {
  auto dev = device();
  if (offset >= dev->size()) co_return make_error_code(std::errc::invalid_argument);
  std::vector<block::Extent> ext;
  if (auto ec = co_await dev->block_status(offset, 1, ext)) co_return ec;
  if (ext.empty()) co_return make_error_code(std::errc::io_error);
  co_return ext.front().depth;
}

ChainImageInfo BackingChain::describe() const {
  auto ls = layers();
  std::shared_ptr<const ChainImageInfo> below;
  for (auto it = ls.rbegin(); it != ls.rend(); ++it) {
    auto info = std::make_shared<ChainImageInfo>();
    info->filename = it->path;
    info->format = it->format;
    info->virtual_size = it->device->size();
    struct stat st {};
    if (::stat(it->path.c_str(), &st) == 0) info->actual_size = uint64_t(st.st_blocks) * 512;
    info->cluster_size = it->qcow2 ? it->qcow2->cluster_size() : 0;
    info->read_only = it->read_only;
    info->backing_filename = it->backing_name;
    info->backing_filename_format = it->backing_format;
    if (below) info->full_backing_filename = below->filename;
    info->backing_image = std::move(below);
    below = std::move(info);
  }
  return *below;
}

bool BackingChain::replace_device(std::string_view path, OpenedImage image, bool read_only) {
  std::lock_guard g(mu_);
  std::size_t i = 0;
  while (i < layers_.size() && layers_[i].path != path) ++i;
  if (i == layers_.size()) return false;
  if (image.qcow2 && i + 1 < layers_.size()) image.qcow2->set_backing(layers_[i + 1].device);
  layers_[i].device = image.device;
  layers_[i].qcow2 = image.qcow2;
  layers_[i].read_only = read_only;
  if (i == 0)
    device_->set_target(image.device);
  else if (layers_[i - 1].qcow2)
    layers_[i - 1].qcow2->set_backing(image.device);
  return true;
}

void BackingChain::push_active(ChainLayer layer) {
  std::lock_guard g(mu_);
  auto dev = layer.device;
  layers_.insert(layers_.begin(), std::move(layer));
  device_->set_target(std::move(dev));
}

std::error_code BackingChain::drop_between(std::string_view above, std::string_view base,
                                           std::string recorded_name,
                                           std::string recorded_format) {
  std::lock_guard g(mu_);
  std::size_t ia = layers_.size(), ib = layers_.size();
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    if (layers_[i].path == above) ia = i;
    if (layers_[i].path == base) ib = i;
  }
  if (ia == layers_.size() || ib == layers_.size() || ia >= ib || !layers_[ia].qcow2)
    return std::make_error_code(std::errc::invalid_argument);
  layers_[ia].qcow2->set_backing(layers_[ib].device);
  layers_[ia].backing_name = std::move(recorded_name);
  layers_[ia].backing_format = std::move(recorded_format);
  layers_.erase(layers_.begin() + std::ptrdiff_t(ia + 1), layers_.begin() + std::ptrdiff_t(ib));
  return {};
}

std::optional<std::string> BackingChain::claim_job(std::string job_id) {
  std::lock_guard g(mu_);
  if (job_) return job_;
  job_ = std::move(job_id);
  return std::nullopt;
}

void BackingChain::release_job(std::string_view job_id) {
  std::lock_guard g(mu_);
  if (job_ && *job_ == job_id) job_.reset();
}

std::optional<std::string> BackingChain::job() const {
  std::lock_guard g(mu_);
  return job_;
}

}  // namespace fleece::cow
