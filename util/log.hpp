// Logging: levels, per-module names, one line per message on stderr.
//
// A tiny wrapper over fmt (Debian's libfmt) rather than a logging framework:
// fleece needs levels, module names and a global threshold, nothing more.
//
//   FLEECE_LOG_INFO("server", "listening on {}", address);
//
// The macros check the level before formatting, so disabled levels cost a
// load and a compare.
#pragma once

#include <fmt/format.h>

#include <optional>
#include <string_view>

namespace fleece::log {

enum class Level { trace, debug, info, warn, error, off };

void set_level(Level level);
Level level();
std::optional<Level> parse_level(std::string_view name);  // "trace".."error", "off"

void write(Level level, std::string_view module, std::string_view message);

inline bool enabled(Level l) { return l >= level(); }

template <class... Args>
void print(Level l, std::string_view module, fmt::format_string<Args...> f, Args&&... args) {
  write(l, module, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace fleece::log

#define FLEECE_LOG(lvl, module, ...)                                    \
  do {                                                                  \
    if (::fleece::log::enabled(lvl)) ::fleece::log::print(lvl, module, __VA_ARGS__); \
  } while (0)
#define FLEECE_LOG_TRACE(module, ...) FLEECE_LOG(::fleece::log::Level::trace, module, __VA_ARGS__)
#define FLEECE_LOG_DEBUG(module, ...) FLEECE_LOG(::fleece::log::Level::debug, module, __VA_ARGS__)
#define FLEECE_LOG_INFO(module, ...) FLEECE_LOG(::fleece::log::Level::info, module, __VA_ARGS__)
#define FLEECE_LOG_WARN(module, ...) FLEECE_LOG(::fleece::log::Level::warn, module, __VA_ARGS__)
#define FLEECE_LOG_ERROR(module, ...) FLEECE_LOG(::fleece::log::Level::error, module, __VA_ARGS__)
