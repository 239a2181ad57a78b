#include "server/qmp_dispatcher.hpp"
#include "server/qmp_messages.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <chrono>
#include <stdexcept>

using namespace fleece::server;
namespace asio = boost::asio;
namespace json = boost::json;

namespace {

QmpCommandTable test_table() {
  QmpCommandTable table;
  table.add({"echo",
             {qmp_required("text", QmpType::string), qmp_optional("times", QmpType::integer)},
             [](const json::object& args) -> asio::awaitable<QmpResult> {
               // Awaits something, as real handlers doing I/O do.
               asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::milliseconds(1));
               co_await timer.async_wait(asio::use_awaitable);
               json::array out;
               for (int64_t i = 0; i < (args.contains("times") ? args.at("times").as_int64() : 1); ++i)
                 out.push_back(args.at("text"));
               co_return json::value(std::move(out));
             }});
  table.add({"no-device", {},
             [](const json::object&) -> asio::awaitable<QmpResult> {
               co_return QmpError::device_not_found("Device 'x' not found");
             }});
  table.add({"buggy", {},
             [](const json::object&) -> asio::awaitable<QmpResult> {
               throw std::runtime_error("oops");
               co_return json::value();
             }});
  return table;
}

// Runs one dispatch to completion; returns the reply as compact JSON.
std::string dispatch(QmpDispatcher& dispatcher, std::string_view request) {
  asio::io_context io;
  std::string out;
  json::value value = json::parse(request);
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    QmpReply reply = co_await dispatcher.dispatch(value);
    out = json::serialize(reply.message);
  }, [](std::exception_ptr e) { if (e) std::rethrow_exception(e); });
  io.run();
  return out;
}

}  // namespace

TEST_CASE("dispatcher: negotiation first, then commands, with id echo") {
  QmpCommandTable table = test_table();
  QmpDispatcher d(table);
  CHECK(dispatch(d, R"({"execute": "echo", "arguments": {"text": "hi"}, "id": "a"})") ==
        R"({"error":{"class":"CommandNotFound","desc":"Expecting capabilities negotiation with 'qmp_capabilities'"},"id":"a"})");
  CHECK_FALSE(d.negotiated());
  CHECK(dispatch(d, R"({"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}})") ==
        R"({"error":{"class":"GenericError","desc":"Capability 'oob' not available"}})");
  CHECK(dispatch(d, R"({"execute": "qmp_capabilities", "id": {"n": [1, 2]}})") ==
        R"({"return":{},"id":{"n":[1,2]}})");
  CHECK(d.negotiated());
  CHECK(dispatch(d, R"({"execute": "qmp_capabilities"})") ==
        R"({"error":{"class":"CommandNotFound","desc":"Capabilities negotiation is already complete, command ignored"}})");
  CHECK(dispatch(d, R"({"execute": "echo", "arguments": {"text": "hi", "times": 2}, "id": 17})") ==
        R"({"return":["hi","hi"],"id":17})");
  CHECK(dispatch(d, R"({"id": null, "execute": "echo", "arguments": {"text": "x"}})") ==
        R"({"return":["x"],"id":null})");
}

TEST_CASE("dispatcher: bad requests get QEMU's errors") {
  QmpCommandTable table = test_table();
  QmpDispatcher d(table);
  dispatch(d, R"({"execute": "qmp_capabilities"})");
  auto generic = [](std::string_view desc, std::string_view id_suffix = "") {
    return fmt::format(R"({{"error":{{"class":"GenericError","desc":"{}"}}{}}})", desc, id_suffix);
  };
  CHECK(dispatch(d, "[1]") == generic("QMP input must be a JSON object"));
  CHECK(dispatch(d, "\"execute\"") == generic("QMP input must be a JSON object"));
  CHECK(dispatch(d, R"({"id": 5})") == generic("QMP input lacks member 'execute'", R"(,"id":5)"));
  CHECK(dispatch(d, R"({"execute": 5})") == generic("QMP input member 'execute' must be a string"));
  CHECK(dispatch(d, R"({"execute": "echo", "arguments": []})") ==
        generic("QMP input member 'arguments' must be an object"));
  CHECK(dispatch(d, R"({"execute": "echo", "argumnets": {}})") ==
        generic("QMP input member 'argumnets' is unexpected"));
  CHECK(dispatch(d, R"({"execute": "nope", "id": "q"})") ==
        R"({"error":{"class":"CommandNotFound","desc":"The command nope has not been found"},"id":"q"})");
  CHECK(dispatch(d, R"({"execute": "echo"})") == generic("Parameter 'text' is missing"));
  CHECK(dispatch(d, R"({"execute": "echo", "arguments": {"text": 1}})") ==
        generic("Invalid parameter type for 'text', expected: string"));
  CHECK(dispatch(d, R"({"execute": "echo", "arguments": {"text": "a", "y": 1}})") ==
        generic("Parameter 'y' is unexpected"));
  CHECK(dispatch(d, R"({"execute": "no-device"})") ==
        R"({"error":{"class":"DeviceNotFound","desc":"Device 'x' not found"}})");
  CHECK(dispatch(d, R"({"execute": "buggy"})") == generic("Internal error in buggy: oops"));
}

TEST_CASE("messages: greeting, event encoding, one line each") {
  QmpVersion v{1, 2, 3, "fleece 1.2.3"};
  CHECK(json::serialize(qmp_greeting(v)) ==
        R"({"QMP":{"version":{"qemu":{"major":1,"minor":2,"micro":3},"package":"fleece 1.2.3"},"capabilities":[]}})");
  auto event = qmp_event("NBD_CLIENT_CONNECTED", json::object{{"export", "d0"}, {"client", "unix"}},
                         QmpTimestamp{1700000000, 123456});
  CHECK(qmp_serialize(event) ==
        "{\"event\":\"NBD_CLIENT_CONNECTED\",\"data\":{\"export\":\"d0\",\"client\":\"unix\"},"
        "\"timestamp\":{\"seconds\":1700000000,\"microseconds\":123456}}\r\n");
  QmpTimestamp now = qmp_now();
  CHECK(now.seconds > 1600000000);
  CHECK(now.microseconds >= 0);
  CHECK(now.microseconds < 1000000);
  CHECK(fleece_qmp_version().package.rfind("fleece ", 0) == 0);
}
