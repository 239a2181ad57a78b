// The `fleece` command: dispatches to `serve` (here) and `ctl` (server/ctl.hpp).
#include "server/ctl.hpp"
#include "server/fleece_table.hpp"
#include "server/notify.hpp"
#include "server/options.hpp"
#include "server/qmp_commands.hpp"
#include "server/qmp_events.hpp"
#include "server/qmp_server.hpp"
#include "server/server.hpp"
#include "util/log.hpp"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {

void usage(std::FILE* out) {
  std::fputs("usage: fleece serve [OPTIONS]   run the NBD server (fleece serve --help)\n"
             "       fleece ctl [--qmp PATH] COMMAND [key=value ...]\n",
             out);
}

int run_serve(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      std::fputs(fleece::server::serve_usage().c_str(), stdout);
      return 0;
    }
  }
  try {
    // Socket activation replaces the default listen address.
    bool activated = std::getenv("LISTEN_FDS") != nullptr;
    auto options = fleece::server::parse_serve_options(args, !activated);
    fleece::log::set_level(options.log_level);
    fleece::server::Server server(std::move(options));
    // Declared after the server so it is destroyed first, while the
    // server's event hooks that point at it are still in place.
    fleece::server::QmpServer* monitors = nullptr;  // set once the QmpServer exists
    auto emit = [&monitors](std::string_view name, std::string data) {
      if (monitors) monitors->emit_event(name, data);
    };
    // Fleece stores: stale ones (a killed server's) go now, live ones at exit.
    fleece::server::FleeceTable fleeces(server.disks(), server.registry(),
                                        {server.options().store_dir, emit});
    fleeces.remove_stale_stores(server.disks().list());
    auto commands = fleece::server::make_qmp_command_table(
        {&server.disks(), &server.registry(), [&server] { server.stop(); }, emit,
         &server.jobs(), &fleeces});
    fleece::server::QmpServer qmp(server.control_context(), commands,
                                  {.socket_path = server.options().qmp_path});
    monitors = &qmp;
    std::string qmp_error;
    if (qmp.start(&qmp_error)) throw fleece::server::StartupError(qmp_error);
    server.set_events(fleece::server::qmp_client_events(qmp));
    int status = server.run([] {
      std::fputs("fleece: ready\n", stdout);
      std::fflush(stdout);
      fleece::server::sd_notify("READY=1");
    });
    qmp.stop();
    monitors = nullptr;
    return status;
  } catch (const fleece::server::StartupError& e) {
    std::fprintf(stderr, "fleece: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fleece: %s\n", e.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  std::string command = argv[1];
  if (command == "serve") return run_serve(argc - 2, argv + 2);
  if (command == "ctl") {
    return fleece::server::run_ctl(argc - 1, argv + 1);  // argv[0] is "ctl"
  }
  if (command == "--help" || command == "-h" || command == "help") {
    usage(stdout);
    return 0;
  }
  std::fprintf(stderr, "fleece: unknown command '%s'\n", command.c_str());
  usage(stderr);
  return 2;
}
