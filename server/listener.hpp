// Listener: one listening socket (Unix, TCP v4/v6, or handed over by systemd).
//
// Binding happens in the constructor-like factories and reports failures as
// StartupError with a one-line message (busy socket path, port in use, ...).
// A stale Unix socket file (nobody accepts on it) is removed before binding;
// a live one is an error. The Unix socket file is removed again by close()
// and by the destructor, but only if this Listener created it.
//
// All listeners use Asio's generic stream protocol, so one accept loop and
// one connection type serve Unix and TCP alike.
#pragma once

#include "server/options.hpp"

#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>

#include <memory>
#include <string>
#include <vector>

namespace fleece::server {

using Socket = boost::asio::generic::stream_protocol::socket;
using Acceptor = boost::asio::basic_socket_acceptor<boost::asio::generic::stream_protocol>;

class Listener {
 public:
  static std::unique_ptr<Listener> bind(boost::asio::io_context& io, const ListenAddress& address);
  // Socket activation: adopts an already listening fd (LISTEN_FDS).
  static std::unique_ptr<Listener> adopt(boost::asio::io_context& io, int fd);

  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  Acceptor& acceptor() { return acceptor_; }
  const std::string& address() const { return address_; }  // "unix:PATH", "tcp:[::1]:10809"
  uint16_t port() const { return port_; }                    // 0 for Unix
  // Stops accepting and removes the socket file this listener created.
  void close();

 private:
  Listener(boost::asio::io_context& io, int fd, std::string address, std::string owned_path);
  Acceptor acceptor_;
  std::string address_;
  std::string owned_path_;
  uint16_t port_ = 0;
};

// fds passed by systemd socket activation: LISTEN_PID must name this process;
// LISTEN_FDS counts fds from 3. Empty when not activated. The variables are
// removed from the environment (children must not inherit them).
std::vector<int> activation_fds();

// "unix", "127.0.0.1:5000", "[::1]:5000" for a connected socket's peer.
std::string peer_name(int fd);
bool is_tcp(int fd);

}  // namespace fleece::server
