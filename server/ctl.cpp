#include "server/ctl.hpp"

#include "server/qmp_cli_arguments.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace fleece::server {
namespace {

namespace json = boost::json;

constexpr int kExitOk = 0;
constexpr int kExitCommandError = 1;
constexpr int kExitTrouble = 2;
// The greeting and negotiation are instant for a live server; a silent peer
// is not one. The command itself may take as long as it takes.
constexpr int kHandshakeTimeoutMs = 10'000;

constexpr const char* kUsage =
    "usage: fleece ctl [--qmp PATH] COMMAND [key=value | key:=JSON ...]\n"
    "  --qmp PATH   the QMP socket of the server (default ./fleece.qmp)\n"
    "  key=value    true/false -> boolean, integers -> number, else string;\n"
    "               a.b=value nests; key:=JSON passes raw JSON (lists, objects)\n"
    "Prints the command's return value as JSON; exit 1 on a QMP error, 2 on\n"
    "usage or connection problems.\n";

class UniqueFd {
 public:
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

struct Trouble {
  std::string message;
};

class QmpClient {
 public:
  QmpClient(std::string path) : path_(std::move(path)), fd_(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) {}

  std::optional<Trouble> connect() {
    if (fd_.get() < 0) return Trouble{fmt::format("cannot create a socket: {}", std::strerror(errno))};
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path_.size() >= sizeof(addr.sun_path)) {
      return Trouble{fmt::format("QMP socket path {} is too long; use a shorter (relative) path", path_)};
    }
    path_.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
    if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      const int err = errno;
      std::string hint = err == ENOENT || err == ECONNREFUSED
                             ? "is fleece serve running? give its socket with --qmp PATH"
                             : "check the path and its permissions";
      return Trouble{fmt::format("cannot connect to QMP socket {}: {} ({})", path_, std::strerror(err), hint)};
    }
    return std::nullopt;
  }

  std::optional<Trouble> send(const json::value& message) {
    std::string text = json::serialize(message) + "\n";
    std::string_view rest = text;
    while (!rest.empty()) {
      ssize_t n = ::send(fd_.get(), rest.data(), rest.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Trouble{fmt::format("lost the connection to {}: {}", path_, std::strerror(errno))};
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
    return std::nullopt;
  }

  // The next message (one JSON object per line); timeout_ms < 0 waits forever.
  std::variant<json::object, Trouble> receive(int timeout_ms) {
    for (;;) {
      auto eol = buffer_.find('\n');
      if (eol != std::string::npos) {
        std::string line = buffer_.substr(0, eol);
        buffer_.erase(0, eol + 1);
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        boost::system::error_code ec;
        json::value v = json::parse(line, ec);
        if (ec || !v.is_object()) return Trouble{fmt::format("{} does not speak QMP (got: {:.80})", path_, line)};
        return std::move(v.get_object());
      }
      pollfd pfd{fd_.get(), POLLIN, 0};
      int ready = ::poll(&pfd, 1, timeout_ms);
      if (ready < 0 && errno == EINTR) continue;
      if (ready == 0) return Trouble{fmt::format("no answer from {} within {} s; is it a fleece QMP socket?", path_, timeout_ms / 1000)};
      char chunk[65536];
      ssize_t n = ::recv(fd_.get(), chunk, sizeof(chunk), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Trouble{fmt::format("lost the connection to {}: {}", path_, std::strerror(errno))};
      if (n == 0) return Trouble{fmt::format("{} closed the connection before answering", path_)};
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }

  // Waits for the reply carrying `id`, skipping events.
  std::variant<json::object, Trouble> reply(const json::value& id, int timeout_ms) {
    for (;;) {
      auto message = receive(timeout_ms);
      if (auto* trouble = std::get_if<Trouble>(&message)) return *trouble;
      json::object& m = std::get<json::object>(message);
      if (m.contains("event")) continue;
      if (!m.contains("return") && !m.contains("error")) {
        return Trouble{fmt::format("{} sent an unexpected message: {}", path_, json::serialize(m))};
      }
      // A reply without our id answers input the server could not attribute; report it too.
      const json::value* got = m.if_contains("id");
      if (got && *got != id) continue;
      return std::move(m);
    }
  }

 private:
  std::string path_;
  UniqueFd fd_;
  std::string buffer_;
};

int trouble(const std::string& message) {
  std::fprintf(stderr, "fleece ctl: %s\n", message.c_str());
  return kExitTrouble;
}

std::string error_line(const json::object& reply) {
  const json::value& error = reply.at("error");
  std::string klass = "GenericError", desc = json::serialize(error);
  if (error.is_object()) {
    if (auto* c = error.get_object().if_contains("class"); c && c->is_string()) klass = c->get_string();
    if (auto* d = error.get_object().if_contains("desc"); d && d->is_string()) desc = d->get_string();
  }
  return klass + ": " + desc;
}

}  // namespace

int run_ctl(int argc, char** argv) {
  std::string path = "./fleece.qmp";
  std::vector<std::string> words;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (!words.empty()) {  // after COMMAND everything is an argument
      words.push_back(std::move(arg));
    } else if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      return kExitOk;
    } else if (arg == "--qmp") {
      if (++i >= argc) return trouble("--qmp needs a socket path");
      path = argv[i];
    } else if (arg.rfind("--qmp=", 0) == 0) {
      path = arg.substr(6);
    } else if (arg.size() > 1 && arg[0] == '-') {
      std::fputs(kUsage, stderr);
      return trouble(fmt::format("unknown option {}", arg));
    } else {
      words.push_back(std::move(arg));
    }
  }
  if (words.empty()) {
    std::fputs(kUsage, stderr);
    return trouble("no command given (try query-commands)");
  }
  if (path.rfind("unix:", 0) == 0) path = path.substr(5);
  if (path.empty()) return trouble("--qmp needs a socket path");

  const std::string command = words.front();
  auto parsed = parse_cli_arguments({words.begin() + 1, words.end()});
  if (auto* message = std::get_if<std::string>(&parsed)) return trouble(*message);
  json::object& arguments = std::get<json::object>(parsed);

  QmpClient client(path);
  if (auto t = client.connect()) return trouble(t->message);
  auto greeting = client.receive(kHandshakeTimeoutMs);
  if (auto* t = std::get_if<Trouble>(&greeting)) return trouble(t->message);
  if (!std::get<json::object>(greeting).contains("QMP")) {
    return trouble(fmt::format("{} did not greet like a QMP server", path));
  }

  const json::value negotiate_id = "fleece-ctl-negotiate";
  if (auto t = client.send(json::object{{"execute", "qmp_capabilities"}, {"id", negotiate_id}})) {
    return trouble(t->message);
  }
  auto negotiated = client.reply(negotiate_id, kHandshakeTimeoutMs);
  if (auto* t = std::get_if<Trouble>(&negotiated)) return trouble(t->message);
  if (std::get<json::object>(negotiated).contains("error")) {
    return trouble(fmt::format("capabilities negotiation failed: {}",
                               error_line(std::get<json::object>(negotiated))));
  }

  const json::value command_id = "fleece-ctl";
  json::object request{{"execute", command}, {"id", command_id}};
  if (!arguments.empty()) request["arguments"] = std::move(arguments);
  if (auto t = client.send(request)) return trouble(t->message);
  auto answer = client.reply(command_id, -1);
  if (auto* t = std::get_if<Trouble>(&answer)) return trouble(t->message);
  const json::object& reply = std::get<json::object>(answer);
  if (reply.contains("error")) {
    std::fprintf(stderr, "%s\n", error_line(reply).c_str());
    return kExitCommandError;
  }
  std::string out = pretty_json(reply.at("return"));
  std::fprintf(stdout, "%s\n", out.c_str());
  return kExitOk;
}

}  // namespace fleece::server
