// fleece-start, fleece-stop, query-fleeces.
#include "server/qmp_commands.hpp"

namespace fleece::server {

void register_fleece_commands(QmpCommandTable& table, const QmpServices& services) {
  (void)table;
  (void)services;
}

}  // namespace fleece::server
