// blockdev-snapshot-sync, block-commit and block-job control.
#include "server/qmp_commands.hpp"

namespace fleece::server {

void register_chain_commands(QmpCommandTable& table, const QmpServices& services) {
  (void)table;
  (void)services;
}

}  // namespace fleece::server
