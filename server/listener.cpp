#include "server/listener.hpp"

#include "util/log.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace fleece::server {
namespace {

constexpr int kBacklog = 1024;

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() { if (fd >= 0) ::close(fd); }
  int release() { return std::exchange(fd, -1); }
};

std::string errno_text(int err) { return std::strerror(err); }

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.data(), path.size());
  return sa;
}

// A Unix socket file that nobody accepts on is left over by a dead server.
void clear_stale_socket(const std::string& path, const std::string& shown) {
  struct stat st{};
  if (::lstat(path.c_str(), &st) != 0) return;  // nothing there
  if (!S_ISSOCK(st.st_mode)) {
    throw StartupError(fmt::format("--listen {}: '{}' exists and is not a socket; remove it or choose another path",
                                   shown, path));
  }
  Fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un sa = unix_address(path);
  if (::connect(probe.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
    throw StartupError(fmt::format("--listen {}: socket busy: another server is listening on '{}'; stop it or choose another path",
                                   shown, path));
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    throw StartupError(fmt::format("--listen {}: cannot remove the stale socket '{}': {}", shown, path,
                                   errno_text(errno)));
  }
  FLEECE_LOG_INFO("server", "removed stale socket {}", path);
}

std::string format_sockaddr(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
    return fmt::format("{}:{}", host, ntohs(sin->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
    return fmt::format("[{}]:{}", host, ntohs(sin6->sin6_port));
  }
  if (ss.ss_family == AF_UNIX) return "unix";
  return "unknown";
}

uint16_t local_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

}  // namespace

Listener::Listener(boost::asio::io_context& io, int fd, std::string address, std::string owned_path)
    : acceptor_(io), address_(std::move(address)), owned_path_(std::move(owned_path)) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  boost::system::error_code ec;
  acceptor_.assign(boost::asio::generic::stream_protocol(ss.ss_family, SOCK_STREAM), fd, ec);
  if (ec) {
    ::close(fd);
    throw StartupError(fmt::format("--listen {}: {}", address_, ec.message()));
  }
  port_ = local_port(fd);
}

Listener::~Listener() { close(); }

void Listener::close() {
  boost::system::error_code ec;
  if (acceptor_.is_open()) acceptor_.close(ec);
  if (!owned_path_.empty()) {
    ::unlink(owned_path_.c_str());
    owned_path_.clear();
  }
}

std::unique_ptr<Listener> Listener::bind(boost::asio::io_context& io, const ListenAddress& address) {
  const std::string shown = address.to_string();
  if (address.kind == ListenAddress::Kind::unix_socket) {
    clear_stale_socket(address.path, shown);
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.fd < 0) throw StartupError(fmt::format("--listen {}: socket: {}", shown, errno_text(errno)));
    sockaddr_un sa = unix_address(address.path);
    if (::bind(fd.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      int err = errno;
      std::string hint = err == EADDRINUSE ? "socket busy; stop the other server or choose another path"
                         : err == EACCES   ? "check the directory's permissions"
                         : err == ENOENT   ? "the directory does not exist"
                                           : "choose another path";
      throw StartupError(fmt::format("--listen {}: cannot bind: {} ({})", shown, errno_text(err), hint));
    }
    if (::listen(fd.fd, kBacklog) != 0) {
      int err = errno;
      ::unlink(address.path.c_str());
      throw StartupError(fmt::format("--listen {}: listen: {}", shown, errno_text(err)));
    }
    return std::unique_ptr<Listener>(new Listener(io, fd.release(), shown, address.path));
  }

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* results = nullptr;
  std::string port = std::to_string(address.port);
  int rc = ::getaddrinfo(address.host.c_str(), port.c_str(), &hints, &results);
  if (rc != 0) {
    throw StartupError(fmt::format("--listen {}: cannot resolve '{}': {} (check the host name)", shown,
                                   address.host, ::gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(results, ::freeaddrinfo);
  int last_err = 0;
  for (addrinfo* ai = results; ai; ai = ai->ai_next) {
    Fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (fd.fd < 0) { last_err = errno; continue; }
    int one = 1;
    ::setsockopt(fd.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd.fd, kBacklog) != 0) {
      last_err = errno;
      continue;
    }
    return std::unique_ptr<Listener>(new Listener(io, fd.release(), shown, {}));
  }
  std::string hint = last_err == EADDRINUSE ? "the port is in use; stop the other server or choose another port"
                     : last_err == EACCES   ? "ports below 1024 need privileges; choose another port"
                     : last_err == EADDRNOTAVAIL ? "the address is not on this machine"
                                                 : "check the address";
  throw StartupError(fmt::format("--listen {}: cannot bind: {} ({})", shown, errno_text(last_err), hint));
}

std::unique_ptr<Listener> Listener::adopt(boost::asio::io_context& io, int fd) {
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  int type = 0;
  socklen_t tlen = sizeof type;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0 ||
      ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0 || type != SOCK_STREAM) {
    throw StartupError(fmt::format("LISTEN_FDS: fd {} is not a stream socket; check the .socket unit", fd));
  }
  std::string address;
  if (ss.ss_family == AF_UNIX) {
    address = fmt::format("unix:{}", reinterpret_cast<sockaddr_un*>(&ss)->sun_path);
  } else {
    address = "tcp:" + format_sockaddr(ss);
  }
  return std::unique_ptr<Listener>(new Listener(io, fd, address + " (activated)", {}));
}

std::vector<int> activation_fds() {
  std::vector<int> fds;
  const char* pid = std::getenv("LISTEN_PID");
  const char* count = std::getenv("LISTEN_FDS");
  if (!pid || !count) return fds;
  bool ours = std::strtoll(pid, nullptr, 10) == ::getpid();
  long n = std::strtol(count, nullptr, 10);
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  if (!ours) return fds;
  for (long i = 0; i < n && i < 1024; ++i) fds.push_back(3 + int(i));
  return fds;
}

std::string peer_name(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "unknown";
  return format_sockaddr(ss);
}

bool is_tcp(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return false;
  return ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
}

}  // namespace fleece::server
