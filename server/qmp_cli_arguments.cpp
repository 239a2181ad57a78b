#include "server/qmp_cli_arguments.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include <charconv>

namespace fleece::server {
namespace {

namespace json = boost::json;

json::value typed_value(std::string_view text) {
  if (text == "true") return true;
  if (text == "false") return false;
  const bool digits = !text.empty() && text.find_first_not_of("0123456789", text[0] == '-' ? 1 : 0) ==
                                           std::string_view::npos && text != "-";
  if (digits) {
    int64_t i = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), i);
    if (ec == std::errc() && p == text.data() + text.size()) return i;
    uint64_t u = 0;
    auto [pu, ecu] = std::from_chars(text.data(), text.data() + text.size(), u);
    if (ecu == std::errc() && pu == text.data() + text.size()) return u;
  }
  return json::string(text);
}

void indent(std::string& out, int depth) { out.append(static_cast<std::size_t>(depth) * 2, ' '); }

void pretty(const json::value& v, std::string& out, int depth) {
  if (v.is_object() && !v.get_object().empty()) {
    out += "{\n";
    bool first = true;
    for (const auto& member : v.get_object()) {
      if (!first) out += ",\n";
      first = false;
      indent(out, depth + 1);
      out += json::serialize(json::string(member.key()));
      out += ": ";
      pretty(member.value(), out, depth + 1);
    }
    out += "\n";
    indent(out, depth);
    out += "}";
  } else if (v.is_array() && !v.get_array().empty()) {
    out += "[\n";
    bool first = true;
    for (const json::value& element : v.get_array()) {
      if (!first) out += ",\n";
      first = false;
      indent(out, depth + 1);
      pretty(element, out, depth + 1);
    }
    out += "\n";
    indent(out, depth);
    out += "]";
  } else {
    out += json::serialize(v);
  }
}

}  // namespace

std::variant<json::object, std::string> parse_cli_arguments(const std::vector<std::string>& words) {
  json::object result;
  for (const std::string& word : words) {
    const auto eq = word.find('=');
    if (eq == std::string::npos) {
      return fmt::format("argument '{}' is not key=value (or key:=JSON)", word);
    }
    const bool raw = eq > 0 && word[eq - 1] == ':';
    const std::string_view key(word.data(), raw ? eq - 1 : eq);
    const std::string_view text = std::string_view(word).substr(eq + 1);
    json::value value;
    if (raw) {
      boost::system::error_code ec;
      value = json::parse(text, ec);
      if (ec) return fmt::format("argument '{}': the value after := is not JSON ({})", word, ec.message());
    } else {
      value = typed_value(text);
    }

    // Walk (creating) the objects named by the dotted key.
    json::object* target = &result;
    std::string_view rest = key;
    for (;;) {
      const auto dot = rest.find('.');
      const std::string_view part = rest.substr(0, dot);
      if (part.empty()) return fmt::format("argument '{}' has an empty key", word);
      if (dot == std::string_view::npos) {
        if (target->contains(part)) return fmt::format("argument '{}' sets '{}' twice", word, key);
        (*target)[part] = std::move(value);
        break;
      }
      json::value& next = (*target)[part];
      if (next.is_null()) next = json::object();
      if (!next.is_object()) {
        return fmt::format("argument '{}' conflicts with an earlier value of '{}'", word, part);
      }
      target = &next.get_object();
      rest = rest.substr(dot + 1);
    }
  }
  return result;
}

std::string pretty_json(const json::value& value) {
  std::string out;
  pretty(value, out, 0);
  return out;
}

}  // namespace fleece::server
