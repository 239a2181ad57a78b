#include "server/ctl.hpp"
#include "server/qmp_cli_arguments.hpp"
#include "server/qmp_command_table.hpp"
#include "server/qmp_server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <doctest/doctest.h>

#include <filesystem>
#include <thread>

using namespace fleece::server;
namespace asio = boost::asio;
namespace json = boost::json;

namespace {

std::string parse(std::vector<std::string> words) {
  auto result = parse_cli_arguments(words);
  if (auto* error = std::get_if<std::string>(&result)) return "ERROR: " + *error;
  return json::serialize(std::get<json::object>(result));
}

int ctl(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  return run_ctl(static_cast<int>(args.size()), argv.data());
}

}  // namespace

TEST_CASE("ctl arguments: typing of key=value") {
  CHECK(parse({}) == "{}");
  CHECK(parse({"node-name=d0", "read-only=true", "writable=false", "size=4096", "neg=-5"}) ==
        R"({"node-name":"d0","read-only":true,"writable":false,"size":4096,"neg":-5})");
  CHECK(parse({"big=18446744073709551615", "huge=99999999999999999999"}) ==
        R"({"big":18446744073709551615,"huge":"99999999999999999999"})");
  CHECK(parse({"s=12a", "t=-", "e=", "eq=a=b", "True=True"}) ==
        R"({"s":"12a","t":"-","e":"","eq":"a=b","True":"True"})");
  CHECK(parse({"devices:=[\"d0\", \"d1\"]", "name:=\"123\"", "obj:={\"a\": null}"}) ==
        R"({"devices":["d0","d1"],"name":"123","obj":{"a":null}})");
  CHECK(parse({"cache.direct=true", "cache.no-flush=false"}) ==
        R"({"cache":{"direct":true,"no-flush":false}})");
}

TEST_CASE("ctl arguments: errors name the word") {
  CHECK(parse({"novalue"}) == "ERROR: argument 'novalue' is not key=value (or key:=JSON)");
  CHECK(parse({"=x"}) == "ERROR: argument '=x' has an empty key");
  CHECK(parse({"a=1", "a=2"}) == "ERROR: argument 'a=2' sets 'a' twice");
  CHECK(parse({"a=1", "a.b=2"}) == "ERROR: argument 'a.b=2' conflicts with an earlier value of 'a'");
  CHECK(parse({"l:=[1,"}).starts_with("ERROR: argument 'l:=[1,': the value after := is not JSON"));
}

TEST_CASE("pretty JSON: two-space indentation, empty containers inline") {
  CHECK(pretty_json(json::parse(R"({"a":[1,{"b":"x"}],"e":{},"f":[]})")) ==
        "{\n  \"a\": [\n    1,\n    {\n      \"b\": \"x\"\n    }\n  ],\n  \"e\": {},\n  \"f\": []\n}");
  CHECK(pretty_json(json::value("s")) == "\"s\"");
}

TEST_CASE("ctl: exit status 0 / 1 / 2 against a QMP server") {
  char tmpl[] = "/tmp/qmp-ctl.XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const std::string path = dir + "/q.sock";
  asio::io_context io;
  auto table = std::make_shared<QmpCommandTable>();
  table->add({"hello", {qmp_required("who", QmpType::string)},
              [](const json::object& args) -> asio::awaitable<QmpResult> {
                co_return json::value(json::object{{"hello", args.at("who")}});
              }});
  {
    QmpServer server(io, table, {path});
    REQUIRE_FALSE(server.start());
    std::thread thread([&] {
      auto guard = asio::make_work_guard(io);
      io.run();
    });
    CHECK(ctl({"ctl", "--qmp", path, "hello", "who=world"}) == 0);
    CHECK(ctl({"ctl", "--qmp=unix:" + path, "hello", "who=world"}) == 0);
    CHECK(ctl({"ctl", "--qmp", path, "hello"}) == 1);            // Parameter 'who' is missing
    CHECK(ctl({"ctl", "--qmp", path, "hello", "who=1"}) == 1);   // wrong type
    CHECK(ctl({"ctl", "--qmp", path, "nope"}) == 1);             // CommandNotFound
    CHECK(ctl({"ctl", "--qmp", path, "hello", "who"}) == 2);     // not key=value
    CHECK(ctl({"ctl", "--qmp", dir + "/absent.sock", "hello"}) == 2);
    CHECK(ctl({"ctl", "--qmp", path}) == 2);                     // no command
    CHECK(ctl({"ctl", "--bogus", "hello"}) == 2);
    server.stop();
    io.stop();
    thread.join();
  }
  std::filesystem::remove_all(dir);
}
