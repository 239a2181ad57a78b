// quit, query-version, query-commands: as QEMU answers them.
#include "server/qmp_arguments.hpp"
#include "server/qmp_commands.hpp"
#include "server/qmp_messages.hpp"
#include "util/log.hpp"

namespace fleece::server {

namespace json = boost::json;
using boost::asio::awaitable;

void register_misc_commands(QmpCommandTable& table, const QmpServices& services) {
  table.add({"quit", {}, [shutdown = services.shutdown](const json::object&) -> awaitable<QmpResult> {
               QmpResult result{json::value(json::object())};
               // After the reply: the client sees {"return": {}} before the socket goes.
               result.after_reply = [shutdown] {
                 FLEECE_LOG_INFO("qmp", "quit requested over QMP");
                 if (shutdown) shutdown();
               };
               co_return result;
             }});

  table.add({"query-version", {}, [](const json::object&) -> awaitable<QmpResult> {
               co_return json::value(qmp_version_object(fleece_qmp_version()));
             }});

  // Lists every command of the table, whenever it is asked (groups added
  // later are included); qmp_capabilities lives in the dispatcher.
  table.add({"query-commands", {}, [&table](const json::object&) -> awaitable<QmpResult> {
               json::array out;
               out.push_back(json::object{{"name", "qmp_capabilities"}});
               for (const std::string& name : table.names()) out.push_back(json::object{{"name", name}});
               co_return json::value(std::move(out));
             }});
}

}  // namespace fleece::server
