// The NBD client events, wired from the server's hooks to QMP monitors.
//
//   server.set_events(qmp_client_events(qmp));   // before server.start()
//
// NBD_CLIENT_CONNECTED / NBD_CLIENT_DISCONNECTED, data
//   {"export": NAME, "client": ADDRESS, "id": CLIENT-ID}
// (ADDRESS as query-nbd-exports shows it). The QmpServer must outlive the
// Server's connections: stop the Server before destroying the QmpServer.
#pragma once

#include "server/server.hpp"

namespace fleece::server {

class QmpServer;

ServerEvents qmp_client_events(QmpServer& qmp);

// The data object of both events, as JSON text (exposed for tests).
std::string nbd_client_event_data(const ClientInfo& client);

}  // namespace fleece::server
