// tls::Stream against an OpenSSL client driven through Asio: what the
// record-level design promises beyond moving bytes (see tls/stream.hpp).
#include "tls_test_support.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <doctest/doctest.h>

#include <array>
#include <string>
#include <vector>

using namespace fleece::tls;
using namespace fleece::tls::test;
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// A server context with the test PKI's X.509 credentials, and a loopback
// listener for one connection.
struct Loopback {
  ServerContext context{x509(pki() / "server")};
  std::shared_ptr<const Credentials> credentials = context.current();
  asio::io_context io;
  tcp::acceptor acceptor{io, tcp::endpoint(asio::ip::address_v4::loopback(), 0)};
  asio::ssl::context client_ctx{asio::ssl::context::tls_client};

  asio::awaitable<asio::ssl::stream<tcp::socket>> connect_client() {
    asio::ssl::stream<tcp::socket> tls(io, client_ctx);
    co_await tls.next_layer().async_connect(acceptor.local_endpoint(), asio::use_awaitable);
    co_await tls.async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
    co_return tls;
  }
};

asio::awaitable<void> pause(std::chrono::milliseconds ms) {
  asio::steady_timer timer(co_await asio::this_coro::executor, ms);
  co_await timer.async_wait(asio::use_awaitable);
}

}  // namespace

TEST_CASE("tls stream: one read returns every record already received") {
  Loopback net;
  auto& io = net.io;
  auto& acceptor = net.acceptor;
  auto& credentials = net.credentials;

  size_t first_read = 0;
  std::string received;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    Stream<tcp::socket> stream(co_await acceptor.async_accept(asio::use_awaitable), *credentials);
    if (!co_await accept(stream, "batch-test", std::chrono::seconds(5))) co_return;
    co_await pause(std::chrono::milliseconds(200));  // all ten records are in the socket by now
    std::vector<char> buffer(64 * 1024);
    first_read = co_await stream.async_read_some(asio::buffer(buffer), asio::use_awaitable);
    received.assign(buffer.data(), first_read);
    co_await asio::async_write(stream, asio::buffer("done", 4), asio::use_awaitable);
  }, asio::detached);

  std::string reply;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    auto tls = co_await net.connect_client();
    for (int i = 0; i < 10; ++i) {  // ten separate records, like ten NBD requests
      std::string request = "request-" + std::to_string(i) + ";";
      co_await asio::async_write(tls, asio::buffer(request), asio::use_awaitable);
    }
    std::array<char, 4> done{};
    co_await asio::async_read(tls, asio::buffer(done), asio::use_awaitable);
    reply.assign(done.data(), done.size());
  }, asio::detached);

  io.run_for(std::chrono::seconds(10));
  std::string expected;
  for (int i = 0; i < 10; ++i) expected += "request-" + std::to_string(i) + ";";
  CHECK(first_read == expected.size());
  CHECK(received == expected);
  CHECK(reply == "done");
}

TEST_CASE("tls stream: a client's KeyUpdate is answered before the next data, and data flows both ways after") {
  Loopback net;
  auto& io = net.io;
  auto& acceptor = net.acceptor;
  auto& credentials = net.credentials;

  // 3 rounds: the client asks for a key update, sends 100 KiB; the server
  // echoes it back. Every byte is checked on both sides.
  auto pattern = [](int round) {
    std::vector<unsigned char> bytes(100 * 1024);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(i * 7 + round * 13);
    return bytes;
  };
  int server_rounds = 0, client_rounds = 0;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    Stream<tcp::socket> stream(co_await acceptor.async_accept(asio::use_awaitable), *credentials);
    if (!co_await accept(stream, "keyupdate-test", std::chrono::seconds(5))) co_return;
    for (int round = 0; round < 3; ++round) {
      std::vector<unsigned char> got(100 * 1024);
      co_await asio::async_read(stream, asio::buffer(got), asio::use_awaitable);
      if (got != pattern(round)) co_return;
      ++server_rounds;
      co_await asio::async_write(stream, asio::buffer(got), asio::use_awaitable);
    }
  }, asio::detached);

  // The client counts the KeyUpdates it receives: the server's answers.
  int key_updates = 0;
  SSL_CTX_set_msg_callback(net.client_ctx.native_handle(),
                           [](int write_p, int, int type, const void* buf, size_t len, SSL*, void* arg) {
                             if (!write_p && type == SSL3_RT_HANDSHAKE && len > 0 &&
                                 static_cast<const unsigned char*>(buf)[0] == SSL3_MT_KEY_UPDATE)
                               ++*static_cast<int*>(arg);
                           });
  SSL_CTX_set_msg_callback_arg(net.client_ctx.native_handle(), &key_updates);
  std::string client_error;
  std::vector<int> answered;  // KeyUpdates received once each echo had arrived
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    auto tls = co_await net.connect_client();
    for (int round = 0; round < 3; ++round) {
      if (SSL_key_update(tls.native_handle(), SSL_KEY_UPDATE_REQUESTED) != 1) co_return;
      auto bytes = pattern(round);
      co_await asio::async_write(tls, asio::buffer(bytes), asio::use_awaitable);
      std::vector<unsigned char> echo(bytes.size());
      auto [ec, n] = co_await asio::async_read(tls, asio::buffer(echo), asio::as_tuple(asio::use_awaitable));
      if (ec) {
        client_error = ec.message();
        co_return;
      }
      if (echo == bytes) ++client_rounds;
      answered.push_back(key_updates);
    }
  }, asio::detached);

  io.run_for(std::chrono::seconds(10));
  CHECK(client_error == "");
  CHECK(server_rounds == 3);
  CHECK(client_rounds == 3);
  // Each answer came ahead of that round's echo.
  CHECK(answered == std::vector<int>{1, 2, 3});
}

TEST_CASE("tls stream: garbage after the handshake fails the read with a TLS error, not a hang") {
  Loopback net;
  auto& io = net.io;
  auto& acceptor = net.acceptor;
  auto& credentials = net.credentials;

  boost::system::error_code read_error;
  bool read_done = false;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    Stream<tcp::socket> stream(co_await acceptor.async_accept(asio::use_awaitable), *credentials);
    if (!co_await accept(stream, "garbage-test", std::chrono::seconds(5))) co_return;
    std::array<char, 16> buffer{};
    auto [ec, n] = co_await stream.async_read_some(asio::buffer(buffer), asio::as_tuple(asio::use_awaitable));
    read_error = ec;
    read_done = true;
  }, asio::detached);

  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    auto tls = co_await net.connect_client();
    // An application-data record header with a body that does not decrypt.
    std::vector<unsigned char> junk{0x17, 0x03, 0x03, 0x00, 0x20};
    junk.resize(5 + 0x20, 0xAB);
    co_await asio::async_write(tls.next_layer(), asio::buffer(junk), asio::use_awaitable);
    co_await pause(std::chrono::milliseconds(500));
  }, asio::detached);

  io.run_for(std::chrono::seconds(10));
  REQUIRE(read_done);
  CHECK(read_error.category() == asio::error::get_ssl_category());
  CHECK(read_error.message().find("bad record mac") != std::string::npos);
}
