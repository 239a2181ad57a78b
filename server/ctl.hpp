// `fleece ctl`: one QMP command from the shell.
//
//   fleece ctl [--qmp PATH] COMMAND [key=value | key:=JSON ...]
//
// Connects to the QMP socket (default ./fleece.qmp; "unix:PATH" accepted
// too), negotiates, sends COMMAND with the arguments typed as described in
// qmp_cli_arguments.hpp, and waits for its answer, skipping events.
//
// Exit status and output:
//   0  {"return": V}: V as pretty JSON on stdout
//   1  {"error": ...}: "CLASS: desc" on stderr
//   2  usage errors and connection problems (no socket, not a QMP server,
//      connection lost): one line on stderr naming what and what to do
//
// argv[0] is the word "ctl" (main passes its argv from there); options and
// the command follow.
#pragma once

namespace fleece::server {

int run_ctl(int argc, char** argv);

}  // namespace fleece::server
