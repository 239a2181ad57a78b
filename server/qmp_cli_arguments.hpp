// The command-line side of QMP, for `fleece ctl`: key=value arguments in,
// pretty JSON out.
//
// Argument typing (one argument per word):
//   key=true / key=false     boolean
//   key=-12                  integer (what fits int64, else uint64)
//   key=anything-else        string
//   key:=JSON                raw JSON: lists, objects, or a string that looks
//                            like a number (name:='"123"')
//   outer.inner=value        nested object {"outer": {"inner": value}}
// A word without '=', an empty key, a key given twice, or bad JSON after :=
// is an error whose message names the word.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace fleece::server {

// The object, or an error message.
std::variant<boost::json::object, std::string> parse_cli_arguments(
    const std::vector<std::string>& words);

// JSON with two-space indentation, as `python3 -m json.tool` prints it.
std::string pretty_json(const boost::json::value& value);

}  // namespace fleece::server
