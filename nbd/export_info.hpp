// What the protocol layer needs to know about an export, and where it asks.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fleece::nbd {

struct ExportInfo {
  std::string name;
  std::string description;
  uint64_t size = 0;
  uint16_t transmission_flags = 0;  // kFlag* (HAS_FLAGS is added by the encoder)
  uint32_t min_block = 1;
  uint32_t preferred_block = 4096;
  uint32_t max_block = 32u << 20;
  std::vector<std::string> meta_contexts;  // e.g. "base:allocation", "qemu:dirty-bitmap:b0"
  bool tls_only = false;                   // refused (TLS_REQD) to a plaintext client
};

// Looked up during negotiation. Implemented by the server's export registry;
// must be safe to call from any thread.
class ExportCatalog {
 public:
  virtual ~ExportCatalog() = default;
  // "" names the default export; nullopt if there is none by that name.
  virtual std::optional<ExportInfo> find(std::string_view name) const = 0;
  virtual std::vector<ExportInfo> list() const = 0;
};

}  // namespace fleece::nbd
