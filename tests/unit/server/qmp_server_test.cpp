#include "server/qmp_command_table.hpp"
#include "server/qmp_server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <cerrno>
#include <thread>

using namespace fleece::server;
namespace asio = boost::asio;
namespace json = boost::json;

namespace {

// A blocking QMP client with a receive timeout, so a broken server fails the test instead of hanging it.
class LineClient {
 public:
  explicit LineClient(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
      throw std::runtime_error("connect failed");
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~LineClient() { if (fd_ >= 0) ::close(fd_); }
  void close() { ::close(fd_); fd_ = -1; }

  void send(std::string_view text) {
    while (!text.empty()) {
      ssize_t n = ::send(fd_, text.data(), text.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw std::runtime_error("send failed");
      text.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  // One message; "" on EOF or timeout.
  std::string line() {
    for (;;) {
      auto eol = buffer_.find("\r\n");
      if (eol != std::string::npos) {
        std::string out = buffer_.substr(0, eol);
        buffer_.erase(0, eol + 2);
        return out;
      }
      char chunk[4096];
      // EINTR without a signal: io_uring task work of earlier tests on this
      // thread interrupts a socket wait that has SO_RCVTIMEO set.
      ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return "";
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }
  json::object message() {
    std::string text = line();
    REQUIRE_FALSE(text.empty());
    return json::parse(text).as_object();
  }
  void negotiate() {
    CHECK(message().contains("QMP"));
    send(R"({"execute": "qmp_capabilities"})");
    CHECK(message() == json::object{{"return", json::object()}});
  }

 private:
  int fd_ = -1;
  std::string buffer_;
};

std::shared_ptr<QmpCommandTable> table() {
  auto t = std::make_shared<QmpCommandTable>();
  t->add({"slow", {},
          [](const json::object&) -> asio::awaitable<QmpResult> {
            asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::milliseconds(300));
            co_await timer.async_wait(asio::use_awaitable);
            co_return json::value("done");
          }});
  t->add({"ping", {},
          [](const json::object&) -> asio::awaitable<QmpResult> { co_return json::value("pong"); }});
  return t;
}

struct Fixture {
  std::string dir = [] {
    char tmpl[] = "/tmp/qmp-unit.XXXXXX";
    return std::string(::mkdtemp(tmpl));
  }();
  std::string path = dir + "/qmp.sock";
  asio::io_context io;
  std::unique_ptr<QmpServer> server = std::make_unique<QmpServer>(io, table(), QmpServerOptions{path, 4096});
  std::thread thread;

  void start() {
    std::string message;
    REQUIRE_FALSE(server->start(&message));
    thread = std::thread([this] {
      auto guard = asio::make_work_guard(io);
      io.run();
    });
  }
  ~Fixture() {
    server.reset();
    io.stop();
    if (thread.joinable()) thread.join();
    std::filesystem::remove_all(dir);
  }
};

bool wait_for(auto predicate) {
  for (int i = 0; i < 500; ++i) {
    if (predicate()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

}  // namespace

TEST_CASE("qmp server: greeting, negotiation, events to negotiated monitors only") {
  Fixture f;
  f.start();
  LineClient a(f.path), b(f.path), quiet(f.path);
  a.negotiate();
  b.negotiate();
  auto greeting = quiet.message();
  CHECK(greeting.at("QMP").at("capabilities").as_array().empty());
  CHECK(wait_for([&] { return f.server->monitor_count() == 3; }));

  f.server->emit_event("NBD_CLIENT_CONNECTED", R"({"export": "d0", "client": "unix"})");
  f.server->emit_event("BAD", "not json");  // dropped, logged
  f.server->emit_event("NO_DATA");
  for (LineClient* c : {&a, &b}) {
    auto event = c->message();
    CHECK(event.at("event") == "NBD_CLIENT_CONNECTED");
    CHECK(event.at("data") == json::object{{"export", "d0"}, {"client", "unix"}});
    CHECK(event.at("timestamp").as_object().at("seconds").as_int64() > 1600000000);
    CHECK(c->message().at("event") == "NO_DATA");
  }
  // The un-negotiated monitor got nothing: its next message is its own answer.
  quiet.send(R"({"execute": "ping"})");
  CHECK(quiet.message().at("error").at("class") == "CommandNotFound");
}

TEST_CASE("qmp server: a monitor leaving mid-command harms nobody; oversized input is refused") {
  Fixture f;
  f.start();
  LineClient a(f.path), b(f.path);
  a.negotiate();
  b.negotiate();
  a.send(R"({"execute": "slow"})");
  a.close();
  b.send(R"({"execute": "slow", "id": 1})");
  CHECK(b.message() == json::object{{"return", "done"}, {"id", 1}});
  CHECK(wait_for([&] { return f.server->monitor_count() == 1; }));

  // 64 KiB in one request against a 4 KiB limit: an error, then the monitor goes on.
  b.send("{\"execute\": \"ping\", \"arguments\": {\"x\": \"" + std::string(65536, 'z') + "\"}}\n");
  auto error = b.message();
  CHECK(error.at("error").at("desc") == "JSON parse error, request longer than 4096 bytes");
  b.send("{\"execute\": \"ping\"}");
  CHECK(b.message() == json::object{{"return", "pong"}});
  b.send("not json\n");
  CHECK(b.message().at("error").at("desc").as_string().starts_with("JSON parse error, "));
  b.send("{\"execute\": \"ping\", \"id\": [true]}");
  CHECK(b.message() == json::object{{"return", "pong"}, {"id", json::array{true}}});
}

TEST_CASE("qmp server: socket file lifecycle") {
  Fixture f;
  // A stale socket file (nobody listening) is replaced.
  {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    f.path.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    ::close(fd);
  }
  f.start();
  // A second server on the same path is refused and does not remove the first's socket.
  {
    asio::io_context io2;
    QmpServer second(io2, table(), QmpServerOptions{f.path, 4096});
    std::string message;
    CHECK(second.start(&message) == std::errc::address_in_use);
    CHECK(message.find(f.path) != std::string::npos);
  }
  CHECK(std::filesystem::exists(f.path));
  LineClient a(f.path);
  a.negotiate();
  f.server->stop();
  CHECK_FALSE(std::filesystem::exists(f.path));
  CHECK(a.line() == "");  // monitor closed
}
