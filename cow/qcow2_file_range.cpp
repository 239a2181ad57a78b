// Qcow2Image::file_range: where a read's bytes sit in one file, for sendfile.
#include "cow/qcow2_image.hpp"

#include "cow/qcow2_entry.hpp"

#include <algorithm>

namespace fleece::cow {

// Held by the FileRange's keep: the image (for its pins), the file range
// of the file below (which keeps the fd open), and this pin.
struct Qcow2Image::HostPin {
  HostPin(std::shared_ptr<Qcow2Image> i, HostPins::iterator p) : image(std::move(i)), pin(p) {}
  HostPin(const HostPin&) = delete;
  HostPin& operator=(const HostPin&) = delete;
  ~HostPin() { image->unpin(pin); }
  std::shared_ptr<Qcow2Image> image;
  HostPins::iterator pin;
  std::shared_ptr<const void> file_keep;
};

bool Qcow2Image::pinned_locked(uint64_t host) const {
  const uint64_t end = host + header_.cluster_size();
  return std::any_of(pins_.begin(), pins_.end(),
                     [&](const auto& p) { return p.first < end && host < p.second; });
}

void Qcow2Image::unpin(HostPins::iterator pin) {
  std::lock_guard lk(mu_);
  pins_.erase(pin);
  std::erase_if(pinned_frees_, [&](uint64_t h) {
    if (pinned_locked(h)) return false;
    release_locked(h);
    return true;
  });
}

std::optional<block::FileRange> Qcow2Image::file_range(uint64_t offset, uint64_t length) const {
  if (length == 0 || offset > header_.size || length > header_.size - offset) return std::nullopt;
  if (header_.extended_l2()) return std::nullopt;  // reads go through read()
  const uint64_t cb = header_.cluster_bits;
  const uint64_t cs = header_.cluster_size();
  const uint64_t first = offset >> cb, last = (offset + length - 1) >> cb;
  // What read() waits for (a write in progress on these clusters) makes
  // this answer none: the caller then reads, and waits.
  auto guard = clusters_.try_lock(first, last, true);
  if (!guard) return std::nullopt;

  std::shared_ptr<block::Device> backing;
  uint64_t host = 0;
  HostPins::iterator pin;
  {
    std::lock_guard lk(mu_);
    std::optional<EntryKind> kind;
    uint64_t first_host = 0;
    for (uint64_t g = first; g <= last; ++g) {
      auto e = cached_entry_locked(g);
      if (!e || !*e) return std::nullopt;
      const Entry& x = **e;
      if (x.kind != EntryKind::data && x.kind != EntryKind::unallocated) return std::nullopt;
      if (!kind) {
        kind = x.kind;
        first_host = x.host;
      }
      if (x.kind != *kind) return std::nullopt;  // split between here and the backing
      if (x.kind == EntryKind::data && x.host != first_host + ((g - first) << cb))
        return std::nullopt;  // not contiguous in the file
    }
    if (*kind == EntryKind::unallocated) {
      backing = backing_;
      if (!backing) return std::nullopt;  // reads as zeroes
    } else {
      host = first_host + (offset & (cs - 1));
      pin = pins_.emplace(pins_.end(), first_host, first_host + ((last - first + 1) << cb));
      const uint64_t end = (first_host >> cb) + (last - first + 1);
      if (sent_.size() < end) sent_.resize(end);
      std::fill(sent_.begin() + std::ptrdiff_t(first_host >> cb), sent_.begin() + std::ptrdiff_t(end), true);
    }
  }
  if (backing) {
    // Past the backing's end reads as zeroes, which no file holds.
    if (offset + length > backing->size()) return std::nullopt;
    return backing->file_range(offset, length);
  }
  auto self = std::const_pointer_cast<Qcow2Image>(shared_from_this());
  auto keep = std::make_shared<HostPin>(std::move(self), pin);
  auto range = file_->file_range(host, length);
  if (!range) return std::nullopt;  // keep unpins
  keep->file_keep = std::move(range->keep);
  range->keep = std::move(keep);
  return range;
}

}  // namespace fleece::cow
