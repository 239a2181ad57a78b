#include "server/qmp_messages.hpp"

#include <boost/json/serialize.hpp>

#include <chrono>

namespace fleece::server {

namespace json = boost::json;

// Kept in step with project(fleece VERSION ...) in the top CMakeLists.txt.
QmpVersion fleece_qmp_version() { return {0, 1, 0, "fleece 0.1.0"}; }

QmpTimestamp qmp_now() {
  using namespace std::chrono;
  const auto us = duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
  return {us / 1000000, us % 1000000};
}

json::object qmp_version_object(const QmpVersion& version) {
  return {{"qemu", {{"major", version.major}, {"minor", version.minor}, {"micro", version.micro}}},
          {"package", version.package}};
}

json::object qmp_greeting(const QmpVersion& version) {
  return {{"QMP", {{"version", qmp_version_object(version)}, {"capabilities", json::array()}}}};
}

json::object qmp_return(json::value value, const json::value* id) {
  json::object reply;
  reply["return"] = std::move(value);
  if (id) reply["id"] = *id;
  return reply;
}

json::object qmp_error(const QmpError& error, const json::value* id) {
  json::object reply;
  reply["error"] = {{"class", error.error_class}, {"desc", error.desc}};
  if (id) reply["id"] = *id;
  return reply;
}

json::object qmp_event(std::string_view name, json::value data, QmpTimestamp when) {
  json::object event;
  event["event"] = name;
  event["data"] = std::move(data);
  event["timestamp"] = {{"seconds", when.seconds}, {"microseconds", when.microseconds}};
  return event;
}

std::string qmp_serialize(const json::value& message) {
  std::string out = json::serialize(message);
  out += "\r\n";
  return out;
}

}  // namespace fleece::server
