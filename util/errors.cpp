#include "util/errors.hpp"

#include <string>

namespace fleece {
namespace {

class FleeceCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "fleece"; }
  std::string message(int code) const override {
    switch (static_cast<Errc>(code)) {
      case Errc::snapshot_broken: return "snapshot is broken (copy-before-write failed)";
      case Errc::access_revoked: return "range was discarded from this snapshot";
      case Errc::store_full: return "snapshot store reached max-store-bytes";
      case Errc::cbw_timeout: return "copy-before-write timed out";
      case Errc::shutting_down: return "server is shutting down";
      case Errc::corrupt_image: return "image is corrupt";
      case Errc::unsupported_feature: return "image uses an unsupported feature";
    }
    return "unknown fleece error";
  }
};

}  // namespace

const std::error_category& fleece_category() noexcept {
  static const FleeceCategory category;
  return category;
}

}  // namespace fleece
