#include "tls/allow_list.hpp"

#include "tls/config.hpp"
#include "tls/credential_file.hpp"

#include <fmt/format.h>

#include <fnmatch.h>

namespace fleece::tls {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

void split_into(std::string_view text, char separator, bool comments, std::vector<std::string>& out) {
  while (true) {
    size_t end = text.find(separator);
    std::string_view entry = trim(text.substr(0, end));
    if (!entry.empty() && !(comments && entry.front() == '#')) out.emplace_back(entry);
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
}

}  // namespace

AllowList AllowList::parse(std::string_view spec) {
  AllowList list;
  if (spec.starts_with('@')) {
    std::string path(spec.substr(1));
    if (path.empty()) throw ConfigError("--tls-authz @FILE: the file name is missing");
    split_into(read_credential_file(path, "--tls-authz"), '\n', true, list.patterns_);
    if (list.patterns_.empty()) {
      throw ConfigError(fmt::format("--tls-authz '{}': no entries (one DN or PSK identity per line)", path));
    }
  } else {
    split_into(spec, ';', false, list.patterns_);
    if (list.patterns_.empty()) {
      throw ConfigError("--tls-authz: no entries (give DNs or PSK identities separated by ';', or @FILE)");
    }
  }
  return list;
}

bool AllowList::allows(std::string_view name) const {
  if (patterns_.empty()) return true;
  if (name.empty()) return false;
  std::string subject(name);
  for (const auto& pattern : patterns_) {
    if (pattern == subject || ::fnmatch(pattern.c_str(), subject.c_str(), 0) == 0) return true;
  }
  return false;
}

}  // namespace fleece::tls
