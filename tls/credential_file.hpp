// Reading credential files with errors a user can act on.
//
// read_credential_file() returns the whole file or throws ConfigError naming
// the path and the cause (missing, not a regular file, permission denied).
// warn_if_exposed() logs a warning when a secret (private key, PSK file) can
// be read by group or others: fleece still uses it, because directories made
// for QEMU or libvirt must work as they are, but says how to fix it.
#pragma once

#include <string>
#include <string_view>

namespace fleece::tls {

std::string read_credential_file(const std::string& path, std::string_view what);
bool file_exists(const std::string& path);
// Returns the warning that was logged, or "" when the permissions are fine.
std::string warn_if_exposed(const std::string& path, std::string_view what);

}  // namespace fleece::tls
