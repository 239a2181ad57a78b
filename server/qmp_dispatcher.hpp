// QmpDispatcher: one parsed request -> one reply, for one monitor.
//
// The checks and their words follow QEMU (qapi/qmp-dispatch.c,
// monitor/qmp-cmds-control.c), in this order:
//   not an object            GenericError "QMP input must be a JSON object"
//   bad top-level member     GenericError "QMP input member 'x' is unexpected",
//                            "... 'execute' must be a string",
//                            "... 'arguments' must be an object"
//   no "execute"             GenericError "QMP input lacks member 'execute'"
//   before negotiation       CommandNotFound "Expecting capabilities negotiation
//                            with 'qmp_capabilities'"
//   qmp_capabilities again   CommandNotFound "Capabilities negotiation is
//                            already complete, command ignored"
//   unknown command          CommandNotFound "The command X has not been found"
//   bad arguments            GenericError (qmp_arguments.hpp)
// "id", when the request is an object that has one, is echoed verbatim in
// the reply, error or not.
//
// qmp_capabilities is handled here, not in the table: its meaning depends on
// the monitor's state, which the dispatcher owns.
#pragma once

#include "server/qmp_command_table.hpp"

#include <functional>

namespace fleece::server {

struct QmpReply {
  boost::json::object message;
  std::function<void()> after_reply;  // run once `message` is on the wire
};

class QmpDispatcher {
 public:
  explicit QmpDispatcher(const QmpCommandTable& table) : table_(table) {}

  bool negotiated() const { return negotiated_; }

  boost::asio::awaitable<QmpReply> dispatch(const boost::json::value& request);

 private:
  const QmpCommandTable& table_;
  bool negotiated_ = false;
};

}  // namespace fleece::server
