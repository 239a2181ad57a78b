// QmpError: the {"class", "desc"} pair of a QMP error reply.
//
// The classes are QEMU's (qapi/error.json): clients written for QEMU switch
// on them, so fleece uses the same few and nothing else.
#pragma once

#include <string>

namespace fleece::server {

namespace qmp_class {
inline constexpr const char* kGenericError = "GenericError";
inline constexpr const char* kCommandNotFound = "CommandNotFound";
inline constexpr const char* kDeviceNotFound = "DeviceNotFound";
inline constexpr const char* kDeviceNotActive = "DeviceNotActive";
}  // namespace qmp_class

struct QmpError {
  std::string error_class;
  std::string desc;

  static QmpError generic(std::string desc) { return {qmp_class::kGenericError, std::move(desc)}; }
  static QmpError command_not_found(std::string desc) {
    return {qmp_class::kCommandNotFound, std::move(desc)};
  }
  static QmpError device_not_found(std::string desc) {
    return {qmp_class::kDeviceNotFound, std::move(desc)};
  }
  bool operator==(const QmpError&) const = default;
};

}  // namespace fleece::server
