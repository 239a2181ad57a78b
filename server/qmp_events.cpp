#include "server/qmp_events.hpp"

#include "server/qmp_server.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

namespace fleece::server {

std::string nbd_client_event_data(const ClientInfo& client) {
  return boost::json::serialize(boost::json::object{
      {"export", client.export_name}, {"client", client.peer}, {"id", client.id}});
}

ServerEvents qmp_client_events(QmpServer& qmp) {
  ServerEvents events;
  events.client_connected = [&qmp](const ClientInfo& client) {
    qmp.emit_event("NBD_CLIENT_CONNECTED", nbd_client_event_data(client));
  };
  events.client_disconnected = [&qmp](const ClientInfo& client) {
    qmp.emit_event("NBD_CLIENT_DISCONNECTED", nbd_client_event_data(client));
  };
  return events;
}

}  // namespace fleece::server
