// QmpCommandTable: QMP command name -> argument schema + asynchronous handler.
//
// Contract
//  * Each command declares its parameters (QmpParam). The dispatcher checks
//    the "arguments" object against them before the handler runs
//    (check_qmp_arguments, qmp_arguments.hpp), so every command reports
//    missing, wrong-typed and unexpected arguments in the same words as QEMU.
//    A handler may read its arguments without re-checking their types.
//  * Handlers are coroutines on the QMP strand; they may co_await I/O (opening
//    a file, draining writes) without blocking other monitors or the NBD side.
//    The object they get stays alive until they complete.
//  * A handler returns a QmpResult: a JSON value (the "return") or a QmpError.
//    after_reply, if set, runs once the reply has been written to the monitor
//    (quit needs its answer on the wire before the server goes down).
//  * Command groups live in their own .cpp (qmp_commands_*.cpp) and add their
//    commands from a register_*_commands() function (qmp_commands.hpp).
//    Static self-registering objects are avoided on purpose: a linker drops
//    unreferenced object files from a static library, and the commands with
//    them.
//
// Boost.JSON appears here, so this header is for QMP's own .cpp files only;
// the rest of the server sees qmp_server.hpp.
#pragma once

#include "server/qmp_error.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace fleece::server {

// The QAPI types a parameter can have; the names in error messages are QEMU's.
enum class QmpType { string, boolean, integer, number, object, array, any };

struct QmpParam {
  std::string name;
  QmpType type = QmpType::string;
  bool required = true;
  std::vector<std::string> choices;  // string enum: the accepted values (empty = any)
  std::vector<QmpParam> members;     // object: its members (empty = any object)
};

inline QmpParam qmp_required(std::string name, QmpType type) {
  return {std::move(name), type, true, {}, {}};
}
inline QmpParam qmp_optional(std::string name, QmpType type) {
  return {std::move(name), type, false, {}, {}};
}

class QmpResult {
 public:
  QmpResult(boost::json::value value) : outcome_(std::move(value)) {}
  QmpResult(QmpError error) : outcome_(std::move(error)) {}

  bool ok() const { return outcome_.index() == 0; }
  const boost::json::value& value() const { return std::get<0>(outcome_); }
  const QmpError& error() const { return std::get<1>(outcome_); }

  std::function<void()> after_reply;

 private:
  std::variant<boost::json::value, QmpError> outcome_;
};

using QmpHandler = std::function<boost::asio::awaitable<QmpResult>(const boost::json::object& args)>;

struct QmpCommand {
  std::string name;
  std::vector<QmpParam> params;
  QmpHandler handler;
};

class QmpCommandTable {
 public:
  // Throws std::logic_error if the name is taken (a programming error).
  void add(QmpCommand command);
  const QmpCommand* find(std::string_view name) const;
  std::vector<std::string> names() const;  // sorted

 private:
  std::map<std::string, QmpCommand, std::less<>> commands_;
};

}  // namespace fleece::server
