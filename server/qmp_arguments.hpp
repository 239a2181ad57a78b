// Argument checking and reading for QMP command handlers.
//
// check_qmp_arguments() is what makes every command answer bad arguments the
// way QEMU does (qapi/qobject-input-visitor.c, qapi/qapi-visit-core.c):
//   "Parameter 'x' is missing"
//   "Invalid parameter type for 'x', expected: string"
//   "Parameter 'x' does not accept value 'v'"
//   "Parameter 'y' is unexpected"
// Declared parameters are checked in declaration order, unexpected ones
// after them; members of nested objects are named "outer.inner".
//
// The qmp_arg_* readers assume the arguments were checked: they return the
// fallback when an optional parameter is absent.
#pragma once

#include "server/qmp_command_table.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace fleece::server {

std::optional<QmpError> check_qmp_arguments(const std::vector<QmpParam>& params,
                                             const boost::json::object& args);

// The QAPI name of a type, as it appears in "expected: ..." messages.
std::string_view qmp_type_name(QmpType type);

std::string qmp_arg_string(const boost::json::object& args, std::string_view name,
                           std::string_view fallback = {});
bool qmp_arg_bool(const boost::json::object& args, std::string_view name, bool fallback);
int64_t qmp_arg_int(const boost::json::object& args, std::string_view name, int64_t fallback);
bool qmp_has_arg(const boost::json::object& args, std::string_view name);

}  // namespace fleece::server
