#include "server/qmp_framer.hpp"

#include <boost/json/serialize.hpp>
#include <doctest/doctest.h>

#include <string>
#include <vector>

using fleece::server::QmpFrame;
using fleece::server::QmpFramer;

namespace {

std::vector<QmpFrame> feed_all(QmpFramer& framer, std::string_view data, std::size_t step) {
  std::vector<QmpFrame> out;
  for (std::size_t i = 0; i < data.size(); i += step) framer.feed(data.substr(i, step), out);
  return out;
}

std::string text(const QmpFrame& frame) {
  return frame.value ? boost::json::serialize(*frame.value) : "ERROR: " + frame.error;
}

}  // namespace

TEST_CASE("framer: objects split anywhere, several per read, over several lines") {
  const std::string input =
      "{\"execute\": \"a\"}{\"execute\":\n \"b\", \"id\": 1}\r\n  \n{\"x\": [1, {\"y\": \"}\"}]}\n";
  for (std::size_t step : {1u, 2u, 3u, 7u, 1000u}) {
    CAPTURE(step);
    QmpFramer framer;
    auto frames = feed_all(framer, input, step);
    REQUIRE(frames.size() == 3);
    CHECK(text(frames[0]) == R"({"execute":"a"})");
    CHECK(text(frames[1]) == R"({"execute":"b","id":1})");
    CHECK(text(frames[2]) == R"({"x":[1,{"y":"}"}]})");
    CHECK_FALSE(framer.in_value());
  }
}

TEST_CASE("framer: non-object values are framed too (the dispatcher rejects them)") {
  QmpFramer framer;
  std::vector<QmpFrame> frames;
  framer.feed("[1,2]\n\"str\"\n42\n", frames);
  REQUIRE(frames.size() == 3);
  CHECK(text(frames[0]) == "[1,2]");
  CHECK(text(frames[1]) == "\"str\"");
  CHECK(text(frames[2]) == "42");
}

TEST_CASE("framer: a syntax error yields one error and the next line parses") {
  QmpFramer framer;
  std::vector<QmpFrame> frames;
  framer.feed("{\"execute\": nope, \"more\": 1}\n{\"execute\": \"ok\"}\n", frames);
  REQUIRE(frames.size() == 2);
  CHECK_FALSE(frames[0].value);
  CHECK(frames[0].error.rfind("JSON parse error, ", 0) == 0);
  CHECK(text(frames[1]) == R"({"execute":"ok"})");
}

TEST_CASE("framer: an error with the rest of its line in a later read") {
  QmpFramer framer;
  std::vector<QmpFrame> frames;
  framer.feed("}}} garbage", frames);
  framer.feed(" still garbage {\"a\":", frames);
  framer.feed(" 1}\n{\"b\": 2}\n", frames);
  REQUIRE(frames.size() == 2);
  CHECK_FALSE(frames[0].value);
  CHECK(text(frames[1]) == R"({"b":2})");
}

TEST_CASE("framer: a request over the limit is refused without being buffered") {
  QmpFramer framer(1024);
  std::vector<QmpFrame> frames;
  std::string huge = "{\"execute\": \"x\", \"arguments\": {\"s\": \"" + std::string(10'000, 'a');
  for (std::size_t i = 0; i < huge.size(); i += 100) framer.feed(std::string_view(huge).substr(i, 100), frames);
  REQUIRE(frames.size() == 1);
  CHECK_FALSE(frames[0].value);
  CHECK(frames[0].error == "JSON parse error, request longer than 1024 bytes");
  // The rest of the line is skipped, whatever it holds; the next line works.
  framer.feed(std::string(5000, 'b') + "\"}}\n", frames);
  framer.feed("{\"execute\": \"after\"}\n", frames);
  REQUIRE(frames.size() == 2);
  CHECK(text(frames[1]) == R"({"execute":"after"})");
}

TEST_CASE("framer: a request of exactly the limit passes") {
  const std::string request = R"({"execute":"x"})";
  QmpFramer framer(request.size());
  std::vector<QmpFrame> frames;
  framer.feed(request + "\n" + request, frames);
  REQUIRE(frames.size() == 2);
  CHECK(text(frames[0]) == request);
  CHECK(text(frames[1]) == request);
}
