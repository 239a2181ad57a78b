// QmpFramer: splits a monitor's byte stream into JSON values, one at a time.
//
// QMP has no framing of its own: a request is a JSON object, possibly over
// several lines, and the next begins where it ends. The framer feeds the bytes
// to an incremental Boost.JSON parser and hands back each complete value.
//
// Contract
//  * feed() may be given any split of the stream (a byte at a time, several
//    requests at once); values come out in order, whitespace between them is
//    skipped.
//  * A request may not exceed max_request_bytes: the framer never holds more
//    than that (plus the parser's tree of it), whatever the peer sends. Past
//    the limit, or on a syntax error, it yields an error frame ("JSON parse
//    error, ...", as QEMU words it) and then discards input up to the end of
//    the line, so the monitor can resynchronise on the next line.
#pragma once

#include <boost/json/value.hpp>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fleece::server {

struct QmpFrame {
  std::optional<boost::json::value> value;  // set for a complete JSON value
  std::string error;                        // set otherwise
};

class QmpFramer {
 public:
  static constexpr std::size_t kDefaultMaxRequestBytes = 1u << 20;

  explicit QmpFramer(std::size_t max_request_bytes = kDefaultMaxRequestBytes);
  ~QmpFramer();
  QmpFramer(const QmpFramer&) = delete;
  QmpFramer& operator=(const QmpFramer&) = delete;

  // Appends the frames completed by `data` to `out`.
  void feed(std::string_view data, std::vector<QmpFrame>& out);

  // True while a value has begun but not ended (for tests and diagnostics).
  bool in_value() const { return in_value_; }

 private:
  void fail(std::string message, std::vector<QmpFrame>& out);

  struct Parser;
  std::unique_ptr<Parser> parser_;
  std::size_t max_request_bytes_;
  std::size_t value_bytes_ = 0;  // bytes of the current value given to the parser
  bool in_value_ = false;
  bool discarding_ = false;      // skipping to the end of the line after an error
};

}  // namespace fleece::server
