// fleece's own error conditions, as a std::error_category.
//
// Devices report failures as std::error_code. Plain errno values
// (std::errc) cover most cases; the conditions below are fleece-specific
// and carry a message a client can be shown (NBD structured ERROR chunks).
#pragma once

#include <system_error>

namespace fleece {

enum class Errc {
  snapshot_broken = 1,   // the frozen view can no longer be exact
  access_revoked,        // the client discarded this range of the frozen view
  store_full,            // max-store-bytes reached
  cbw_timeout,           // a copy-before-write took longer than cbw-timeout
  shutting_down,         // the server is stopping
  corrupt_image,         // an on-disk structure is invalid
  unsupported_feature,   // a valid image uses a feature fleece refuses
};

const std::error_category& fleece_category() noexcept;

inline std::error_code make_error_code(Errc e) noexcept {
  return {static_cast<int>(e), fleece_category()};
}

}  // namespace fleece

template <>
struct std::is_error_code_enum<fleece::Errc> : std::true_type {};
