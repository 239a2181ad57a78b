#include "server/qmp_arguments.hpp"

#include <algorithm>
#include <fmt/format.h>

namespace fleece::server {
namespace {

namespace json = boost::json;

bool has_type(const json::value& v, QmpType type) {
  switch (type) {
    case QmpType::string: return v.is_string();
    case QmpType::boolean: return v.is_bool();
    case QmpType::integer: return v.is_int64() || v.is_uint64();
    case QmpType::number: return v.is_number();
    case QmpType::object: return v.is_object();
    case QmpType::array: return v.is_array();
    case QmpType::any: return true;
  }
  return false;
}

std::string full_name(std::string_view prefix, std::string_view name) {
  return prefix.empty() ? std::string(name) : fmt::format("{}.{}", prefix, name);
}

std::optional<QmpError> check_object(const std::vector<QmpParam>& params, const json::object& args,
                                     std::string_view prefix) {
  for (const QmpParam& param : params) {
    const json::value* v = args.if_contains(param.name);
    const std::string name = full_name(prefix, param.name);
    if (!v) {
      if (param.required) return QmpError::generic(fmt::format("Parameter '{}' is missing", name));
      continue;
    }
    if (!has_type(*v, param.type)) {
      return QmpError::generic(fmt::format("Invalid parameter type for '{}', expected: {}", name,
                                           qmp_type_name(param.type)));
    }
    if (param.type == QmpType::string && !param.choices.empty()) {
      std::string_view s = v->get_string();
      if (std::find(param.choices.begin(), param.choices.end(), s) == param.choices.end()) {
        return QmpError::generic(
            fmt::format("Parameter '{}' does not accept value '{}'", name, s));
      }
    }
    if (param.type == QmpType::object && !param.members.empty()) {
      if (auto error = check_object(param.members, v->get_object(), name)) return error;
    }
  }
  for (const auto& member : args) {
    const bool declared = std::any_of(params.begin(), params.end(),
                                      [&](const QmpParam& p) { return p.name == member.key(); });
    if (!declared) {
      return QmpError::generic(
          fmt::format("Parameter '{}' is unexpected", full_name(prefix, member.key())));
    }
  }
  return std::nullopt;
}

}  // namespace

std::string_view qmp_type_name(QmpType type) {
  switch (type) {
    case QmpType::string: return "string";
    case QmpType::boolean: return "boolean";
    case QmpType::integer: return "integer";
    case QmpType::number: return "number";
    case QmpType::object: return "object";
    case QmpType::array: return "array";
    case QmpType::any: return "any";
  }
  return "any";
}

std::optional<QmpError> check_qmp_arguments(const std::vector<QmpParam>& params,
                                             const json::object& args) {
  return check_object(params, args, "");
}

std::string qmp_arg_string(const json::object& args, std::string_view name,
                           std::string_view fallback) {
  const json::value* v = args.if_contains(name);
  return v && v->is_string() ? std::string(v->get_string()) : std::string(fallback);
}

bool qmp_arg_bool(const json::object& args, std::string_view name, bool fallback) {
  const json::value* v = args.if_contains(name);
  return v && v->is_bool() ? v->get_bool() : fallback;
}

int64_t qmp_arg_int(const json::object& args, std::string_view name, int64_t fallback) {
  const json::value* v = args.if_contains(name);
  if (!v) return fallback;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return static_cast<int64_t>(v->get_uint64());
  return fallback;
}

bool qmp_has_arg(const json::object& args, std::string_view name) {
  return args.contains(name);
}

}  // namespace fleece::server
