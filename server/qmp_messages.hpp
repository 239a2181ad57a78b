// The messages a QMP server sends, encoded as QEMU does.
//
//   greeting  {"QMP": {"version": {"qemu": {"major", "minor", "micro"},
//                                  "package": "fleece X.Y.Z"},
//                      "capabilities": []}}
//   return    {"return": VALUE, "id": ID}        id only if the request had one
//   error     {"error": {"class": C, "desc": D}, "id": ID}
//   event     {"event": NAME, "data": DATA,
//              "timestamp": {"seconds": S, "microseconds": US}}
//
// Each is serialised compactly on one line ending in "\r\n", like QEMU, so
// line-oriented clients (socat, shell scripts) can read them.
#pragma once

#include "server/qmp_error.hpp"

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace fleece::server {

struct QmpVersion {
  int major = 0;
  int minor = 0;
  int micro = 0;
  std::string package;  // "fleece 0.1.0"
};

// fleece's own version, as announced in the greeting and query-version.
QmpVersion fleece_qmp_version();

struct QmpTimestamp {
  int64_t seconds = 0;
  int64_t microseconds = 0;
};
QmpTimestamp qmp_now();  // wall-clock time, as QEMU stamps events

boost::json::object qmp_version_object(const QmpVersion& version);  // query-version's return
boost::json::object qmp_greeting(const QmpVersion& version);
boost::json::object qmp_return(boost::json::value value, const boost::json::value* id);
boost::json::object qmp_error(const QmpError& error, const boost::json::value* id);
boost::json::object qmp_event(std::string_view name, boost::json::value data, QmpTimestamp when);

// Compact JSON followed by "\r\n".
std::string qmp_serialize(const boost::json::value& message);

}  // namespace fleece::server
