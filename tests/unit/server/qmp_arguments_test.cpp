#include "server/qmp_arguments.hpp"

#include <boost/json/parse.hpp>
#include <doctest/doctest.h>

using namespace fleece::server;

namespace {

std::string check(const std::vector<QmpParam>& params, std::string_view args_json) {
  auto error = check_qmp_arguments(params, boost::json::parse(args_json).as_object());
  if (!error) return "ok";
  CHECK(error->error_class == "GenericError");
  return error->desc;
}

std::vector<QmpParam> blockdev_like() {
  QmpParam driver = qmp_required("driver", QmpType::string);
  driver.choices = {"file", "raw"};
  QmpParam cache = qmp_optional("cache", QmpType::object);
  cache.members = {qmp_optional("direct", QmpType::boolean)};
  return {qmp_required("node-name", QmpType::string), driver, qmp_optional("read-only", QmpType::boolean),
          qmp_optional("size", QmpType::integer), cache, qmp_optional("anything", QmpType::any)};
}

}  // namespace

TEST_CASE("arguments: good ones pass") {
  auto params = blockdev_like();
  CHECK(check(params, R"({"node-name": "d0", "driver": "file"})") == "ok");
  CHECK(check(params, R"({"node-name": "d0", "driver": "raw", "read-only": true, "size": 5,
                          "cache": {"direct": false}, "anything": [null]})") == "ok");
  CHECK(check(params, R"({"node-name": "d0", "driver": "raw", "size": 18446744073709551615})") == "ok");
}

TEST_CASE("arguments: QEMU's words for missing, wrong type, bad enum, unexpected") {
  auto params = blockdev_like();
  CHECK(check(params, R"({"driver": "file"})") == "Parameter 'node-name' is missing");
  CHECK(check(params, R"({"node-name": 7, "driver": "file"})") ==
        "Invalid parameter type for 'node-name', expected: string");
  CHECK(check(params, R"({"node-name": "d", "driver": "file", "read-only": "yes"})") ==
        "Invalid parameter type for 'read-only', expected: boolean");
  CHECK(check(params, R"({"node-name": "d", "driver": "file", "size": 1.5})") ==
        "Invalid parameter type for 'size', expected: integer");
  CHECK(check(params, R"({"node-name": "d", "driver": "file", "cache": true})") ==
        "Invalid parameter type for 'cache', expected: object");
  CHECK(check(params, R"({"node-name": "d", "driver": "file", "cache": {"direct": 1}})") ==
        "Invalid parameter type for 'cache.direct', expected: boolean");
  CHECK(check(params, R"({"node-name": "d", "driver": "file", "cache": {"no-flush": true}})") ==
        "Parameter 'cache.no-flush' is unexpected");
  CHECK(check(params, R"({"node-name": "d", "driver": "vmdk"})") ==
        "Parameter 'driver' does not accept value 'vmdk'");
  CHECK(check(params, R"({"node-name": "d", "driver": "file", "bogus": 1})") ==
        "Parameter 'bogus' is unexpected");
  // Declared parameters are checked before unexpected ones, as QEMU's visitor does.
  CHECK(check(params, R"({"bogus": 1})") == "Parameter 'node-name' is missing");
}

TEST_CASE("arguments: readers return the value or the fallback") {
  auto args = boost::json::parse(R"({"s": "x", "b": true, "i": -3, "u": 7})").as_object();
  CHECK(qmp_arg_string(args, "s") == "x");
  CHECK(qmp_arg_string(args, "missing", "dflt") == "dflt");
  CHECK(qmp_arg_bool(args, "b", false) == true);
  CHECK(qmp_arg_bool(args, "missing", true) == true);
  CHECK(qmp_arg_int(args, "i", 0) == -3);
  CHECK(qmp_arg_int(args, "u", 0) == 7);
  CHECK(qmp_arg_int(args, "missing", 9) == 9);
  CHECK(qmp_has_arg(args, "s"));
  CHECK_FALSE(qmp_has_arg(args, "t"));
}

TEST_CASE("command table: lookup, sorted names, duplicates are a programming error") {
  QmpCommandTable table;
  table.add({"b-cmd", {}, {}});
  table.add({"a-cmd", {}, {}});
  CHECK(table.find("a-cmd") != nullptr);
  CHECK(table.find("c-cmd") == nullptr);
  CHECK(table.names() == std::vector<std::string>{"a-cmd", "b-cmd"});
  CHECK_THROWS_AS(table.add({"a-cmd", {}, {}}), std::logic_error);
}
