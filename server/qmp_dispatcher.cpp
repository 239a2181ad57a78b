#include "server/qmp_dispatcher.hpp"

#include "server/qmp_arguments.hpp"
#include "server/qmp_messages.hpp"
#include "util/log.hpp"

#include <fmt/format.h>

#include <optional>

namespace fleece::server {
namespace {

namespace json = boost::json;

// Checks the request's shape; on success `command` and `args` point into it.
std::optional<QmpError> check_request(const json::object& request, std::string_view& command,
                                      const json::object*& args) {
  bool has_execute = false;
  for (const auto& member : request) {
    const std::string_view key = member.key();
    if (key == "execute") {
      if (!member.value().is_string())
        return QmpError::generic("QMP input member 'execute' must be a string");
      command = member.value().get_string();
      has_execute = true;
    } else if (key == "arguments") {
      if (!member.value().is_object())
        return QmpError::generic("QMP input member 'arguments' must be an object");
      args = &member.value().get_object();
    } else if (key != "id") {
      return QmpError::generic(fmt::format("QMP input member '{}' is unexpected", key));
    }
  }
  if (!has_execute) return QmpError::generic("QMP input lacks member 'execute'");
  return std::nullopt;
}

}  // namespace

boost::asio::awaitable<QmpReply> QmpDispatcher::dispatch(const json::value& request) {
  if (!request.is_object()) {
    co_return QmpReply{qmp_error(QmpError::generic("QMP input must be a JSON object"), nullptr), {}};
  }
  const json::object& object = request.get_object();
  const json::value* id = object.if_contains("id");
  auto fail = [&](QmpError error) { return QmpReply{qmp_error(error, id), {}}; };

  std::string_view command;
  static const json::object kNoArguments;
  const json::object* args = &kNoArguments;
  if (auto error = check_request(object, command, args)) co_return fail(std::move(*error));

  if (command == "qmp_capabilities") {
    if (negotiated_) {
      co_return fail(QmpError::command_not_found(
          "Capabilities negotiation is already complete, command ignored"));
    }
    // fleece offers no optional capabilities (no "oob"); "enable" may only be empty.
    static const std::vector<QmpParam> params = {qmp_optional("enable", QmpType::array)};
    if (auto error = check_qmp_arguments(params, *args)) co_return fail(std::move(*error));
    if (const json::value* enable = args->if_contains("enable")) {
      const json::array& list = enable->get_array();
      for (std::size_t i = 0; i < list.size(); ++i) {
        if (!list[i].is_string()) {
          co_return fail(QmpError::generic(
              fmt::format("Invalid parameter type for 'enable[{}]', expected: string", i)));
        }
      }
      if (!list.empty()) {
        co_return fail(QmpError::generic(fmt::format(
            "Capability '{}' not available", std::string_view(list[0].get_string()))));
      }
    }
    negotiated_ = true;
    co_return QmpReply{qmp_return(json::object(), id), {}};
  }
  if (!negotiated_) {
    co_return fail(QmpError::command_not_found(
        "Expecting capabilities negotiation with 'qmp_capabilities'"));
  }

  const QmpCommand* found = table_.find(command);
  if (!found) {
    co_return fail(QmpError::command_not_found(fmt::format("The command {} has not been found", command)));
  }
  if (auto error = check_qmp_arguments(found->params, *args)) co_return fail(std::move(*error));

  FLEECE_LOG_DEBUG("qmp", "executing {}", command);
  // A throwing handler is a bug in fleece; it must still not take the server down.
  std::optional<QmpResult> outcome;
  try {
    outcome.emplace(co_await found->handler(*args));
  } catch (const std::exception& e) {
    FLEECE_LOG_ERROR("qmp", "{} threw: {}", command, e.what());
    outcome.emplace(QmpError::generic(fmt::format("Internal error in {}: {}", command, e.what())));
  }
  QmpResult& result = *outcome;
  if (!result.ok()) {
    FLEECE_LOG_DEBUG("qmp", "{} failed: {}", command, result.error().desc);
    co_return QmpReply{qmp_error(result.error(), id), std::move(result.after_reply)};
  }
  co_return QmpReply{qmp_return(result.value(), id), std::move(result.after_reply)};
}

}  // namespace fleece::server
