#include "tls/credential_file.hpp"

#include "tls/config.hpp"
#include "util/log.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace fleece::tls {

std::string read_credential_file(const std::string& path, std::string_view what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    int e = errno;
    if (e == ENOENT) throw ConfigError(fmt::format("{} '{}': no such file", what, path));
    throw ConfigError(fmt::format("{} '{}': {}", what, path, std::strerror(e)));
  }
  if (!S_ISREG(st.st_mode)) throw ConfigError(fmt::format("{} '{}': not a regular file", what, path));
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int e = errno;
    throw ConfigError(fmt::format("{} '{}': cannot be read ({}); fleece runs as uid {}, check the owner and mode",
                                  what, path, std::strerror(e ? e : EACCES), ::getuid()));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string warn_if_exposed(const std::string& path, std::string_view what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || (st.st_mode & (S_IRWXG | S_IRWXO)) == 0) return {};
  std::string who = (st.st_mode & S_IROTH) ? "everyone" : (st.st_mode & S_IRGRP) ? "its group" : "";
  std::string warning =
      who.empty()
          ? fmt::format("{} '{}' has group/other permission bits ({:03o}); run 'chmod 600 {}'",
                        what, path, st.st_mode & 0777, path)
          : fmt::format("{} '{}' is readable by {} (mode {:03o}); it is a secret, run 'chmod 600 {}'",
                        what, path, who, st.st_mode & 0777, path);
  FLEECE_LOG_WARN("tls", "{}", warning);
  return warning;
}

}  // namespace fleece::tls
