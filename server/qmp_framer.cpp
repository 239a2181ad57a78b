#include "server/qmp_framer.hpp"

#include <boost/json/stream_parser.hpp>
#include <fmt/format.h>

#include <algorithm>

namespace fleece::server {

struct QmpFramer::Parser {
  boost::json::stream_parser parser;
};

QmpFramer::QmpFramer(std::size_t max_request_bytes)
    : parser_(std::make_unique<Parser>()), max_request_bytes_(max_request_bytes) {}

QmpFramer::~QmpFramer() = default;

void QmpFramer::fail(std::string message, std::vector<QmpFrame>& out) {
  out.push_back({std::nullopt, std::move(message)});
  parser_->parser.reset();
  in_value_ = false;
  value_bytes_ = 0;
  discarding_ = true;
}

void QmpFramer::feed(std::string_view data, std::vector<QmpFrame>& out) {
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!data.empty()) {
    if (discarding_) {
      auto eol = data.find('\n');
      if (eol == std::string_view::npos) return;
      data.remove_prefix(eol + 1);
      discarding_ = false;
      continue;
    }
    if (!in_value_) {
      // Whitespace between values neither starts a value nor counts against the limit.
      auto first = std::find_if_not(data.begin(), data.end(), is_space);
      data.remove_prefix(static_cast<std::size_t>(first - data.begin()));
      if (data.empty()) return;
      in_value_ = true;
      value_bytes_ = 0;
    }
    if (value_bytes_ >= max_request_bytes_) {
      fail(fmt::format("JSON parse error, request longer than {} bytes", max_request_bytes_), out);
      continue;
    }
    const std::size_t chunk = std::min(data.size(), max_request_bytes_ - value_bytes_);
    boost::system::error_code ec;
    const std::size_t used = parser_->parser.write_some(data.data(), chunk, ec);
    if (ec) {
      fail(fmt::format("JSON parse error, {}", ec.message()), out);
      data.remove_prefix(std::min(used, data.size()));
      continue;
    }
    data.remove_prefix(used);
    value_bytes_ += used;
    if (parser_->parser.done()) {
      out.push_back({parser_->parser.release(), {}});
      parser_->parser.reset();
      in_value_ = false;
      value_bytes_ = 0;
    } else if (used == 0) {
      return;  // cannot happen by write_some's contract; never spin
    }
  }
}

}  // namespace fleece::server
