// The QMP commands fleece offers, bound to the server's tables.
//
//   auto table = make_qmp_command_table({&server.disks(), &server.registry(),
//                                        [&server] { server.stop(); }});
//
// One group per file, each adding its commands from its register function:
//   qmp_commands_block.cpp  blockdev-add, blockdev-del, query-block
//   qmp_commands_nbd.cpp    nbd-server-add, nbd-server-remove,
//                           query-nbd-exports, query-stats
//   qmp_commands_fleece.cpp fleece-start, fleece-stop, query-fleeces
//   qmp_commands_chain.cpp  blockdev-snapshot-sync, block-commit, block-job-*
//   qmp_commands_bitmap.cpp block-dirty-bitmap-add/-remove/-clear/-enable/
//                           -disable/-merge
//   qmp_commands_misc.cpp   quit, query-version, query-commands
// A new group adds its function here and a call in make_qmp_command_table.
//
// The handlers run on the QMP strand; the tables they touch are thread-safe
// on their own, so NBD connections on other threads go on meanwhile.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace fleece::server {

class DiskTable;
class ExportRegistry;
class FleeceTable;
class JobTable;
class QmpCommandTable;

struct QmpServices {
  DiskTable* disks = nullptr;
  ExportRegistry* registry = nullptr;
  std::function<void()> shutdown;  // quit: begin a clean shutdown (after the reply is sent)
  // Sends an asynchronous event to every monitor; data_json is the "data"
  // object as JSON text. Callable from any thread; may be empty in tests.
  std::function<void(std::string_view name, std::string data_json)> emit_event;
  // Block jobs (block-commit); the server's, so that shutdown can cancel
  // them. Null: the chain commands keep a table of their own (tests).
  JobTable* jobs = nullptr;
  // Fleeces (fleece-start/-stop, query-fleeces); the server's, so that
  // shutdown deletes their stores. Null: those commands are not offered.
  FleeceTable* fleeces = nullptr;
};

std::shared_ptr<QmpCommandTable> make_qmp_command_table(QmpServices services);

void register_block_commands(QmpCommandTable& table, const QmpServices& services);
void register_nbd_commands(QmpCommandTable& table, const QmpServices& services);
void register_fleece_commands(QmpCommandTable& table, const QmpServices& services);
void register_chain_commands(QmpCommandTable& table, const QmpServices& services);
void register_bitmap_commands(QmpCommandTable& table, const QmpServices& services);
// `table` is also what query-commands lists, so this group is added last.
void register_misc_commands(QmpCommandTable& table, const QmpServices& services);

}  // namespace fleece::server
