#include "server/qmp_command_table.hpp"

#include <stdexcept>

namespace fleece::server {

void QmpCommandTable::add(QmpCommand command) {
  std::string name = command.name;
  auto [it, inserted] = commands_.try_emplace(std::move(name), std::move(command));
  if (!inserted) throw std::logic_error("QMP command registered twice: " + it->first);
}

const QmpCommand* QmpCommandTable::find(std::string_view name) const {
  auto it = commands_.find(name);
  return it == commands_.end() ? nullptr : &it->second;
}

std::vector<std::string> QmpCommandTable::names() const {
  std::vector<std::string> out;
  out.reserve(commands_.size());
  for (const auto& [name, command] : commands_) out.push_back(name);
  return out;
}

}  // namespace fleece::server
