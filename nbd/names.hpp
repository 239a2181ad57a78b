// Printable names of NBD option, command and error values, for logs.
//
//   FLEECE_LOG_DEBUG("nbd", "{} refused", option_name(opt));  // "NBD_OPT_GO"
//
// Unknown values give "unknown".
#pragma once

#include <cstdint>
#include <string_view>

namespace fleece::nbd {

std::string_view option_name(uint32_t option);
std::string_view command_name(uint16_t command);
std::string_view error_name(uint32_t error);  // NBD wire error, e.g. "NBD_EINVAL"

}  // namespace fleece::nbd
