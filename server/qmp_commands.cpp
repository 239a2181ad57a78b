#include "server/qmp_commands.hpp"

#include "server/qmp_command_table.hpp"

namespace fleece::server {

std::shared_ptr<QmpCommandTable> make_qmp_command_table(QmpServices services) {
  auto table = std::make_shared<QmpCommandTable>();
  register_block_commands(*table, services);
  register_nbd_commands(*table, services);
  register_fleece_commands(*table, services);
  register_chain_commands(*table, services);
  register_bitmap_commands(*table, services);
  register_misc_commands(*table, services);
  return table;
}

}  // namespace fleece::server
