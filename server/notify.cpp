#include "server/notify.hpp"

#include "util/log.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace fleece::server {

bool sd_notify(std::string_view state) {
  const char* env = std::getenv("NOTIFY_SOCKET");
  if (!env || !*env) return true;
  std::string path = env;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path || (path[0] != '/' && path[0] != '@')) {
    FLEECE_LOG_WARN("server", "NOTIFY_SOCKET '{}' is not usable", path);
    return false;
  }
  std::memcpy(sa.sun_path, path.data(), path.size());
  if (path[0] == '@') sa.sun_path[0] = '\0';
  socklen_t len = socklen_t(offsetof(sockaddr_un, sun_path) + path.size());
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  ssize_t n = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&sa), len);
  ::close(fd);
  if (n != ssize_t(state.size())) {
    FLEECE_LOG_WARN("server", "sd_notify to {} failed: {}", path, std::strerror(errno));
    return false;
  }
  return true;
}

}  // namespace fleece::server
