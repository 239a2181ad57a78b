// UpgradableStream: plain bytes, then STARTTLS in place, then TLS bytes,
// through the same object and Asio's composed operations.
#include "tls/upgradable_stream.hpp"
#include "tls_test_support.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <doctest/doctest.h>

#include <array>
#include <vector>

using namespace fleece::tls;
using namespace fleece::tls::test;
namespace asio = boost::asio;
using asio::ip::tcp;

TEST_CASE("upgradable stream: plain phase, STARTTLS, TLS phase with gathered writes") {
  ServerContext context(x509(pki() / "server"));

  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  std::string server_plain, server_tls, client_ack, client_reply;
  bool server_was_tls = false;
  fleece::Result<PeerIdentity> server_peer = std::make_error_code(std::errc::not_connected);

  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    UpgradableStream<tcp::socket> stream(co_await acceptor.async_accept(asio::use_awaitable));
    std::array<char, 8> hello{};
    co_await asio::async_read(stream, asio::buffer(hello), asio::use_awaitable);
    server_plain.assign(hello.data(), hello.size());
    co_await asio::async_write(stream, asio::buffer("ACK", 3), asio::use_awaitable);
    server_peer = co_await accept(stream.start_tls(context.current()), "upgrade-test", std::chrono::seconds(5));
    if (!server_peer) co_return;
    server_was_tls = stream.is_tls();
    std::array<char, 4> ping{};
    co_await asio::async_read(stream, asio::buffer(ping), asio::use_awaitable);
    server_tls.assign(ping.data(), ping.size());
    std::array<asio::const_buffer, 3> pieces{asio::buffer("po", 2), asio::buffer("n", 1), asio::buffer("g!", 2)};
    co_await asio::async_write(stream, pieces, asio::use_awaitable);
  }, asio::detached);

  asio::ssl::context client_ctx(asio::ssl::context::tls_client);
  client_ctx.load_verify_file((pki() / "client" / "ca-cert.pem").string());
  client_ctx.set_verify_mode(asio::ssl::verify_peer);
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    tcp::socket socket(io);
    co_await socket.async_connect(acceptor.local_endpoint(), asio::use_awaitable);
    co_await asio::async_write(socket, asio::buffer("STARTTLS", 8), asio::use_awaitable);
    std::array<char, 3> ack{};
    co_await asio::async_read(socket, asio::buffer(ack), asio::use_awaitable);
    client_ack.assign(ack.data(), ack.size());
    asio::ssl::stream<tcp::socket&> tls(socket, client_ctx);
    co_await tls.async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
    co_await asio::async_write(tls, asio::buffer("ping", 4), asio::use_awaitable);
    std::array<char, 5> reply{};
    co_await asio::async_read(tls, asio::buffer(reply), asio::use_awaitable);
    client_reply.assign(reply.data(), reply.size());
  }, asio::detached);

  io.run_for(std::chrono::seconds(10));
  CHECK(server_plain == "STARTTLS");
  CHECK(client_ack == "ACK");
  REQUIRE(server_peer.has_value());
  CHECK(server_was_tls);
  CHECK(server_tls == "ping");
  CHECK(client_reply == "pong!");
}

TEST_CASE("upgradable stream: gathered writes of small and large pieces arrive intact under TLS") {
  ServerContext context(x509(pki() / "server"));

  // 300 reply-like pieces: 16-byte headers, some followed by data of 1 B .. 1 MiB.
  std::vector<std::vector<unsigned char>> pieces;
  size_t total = 0;
  for (int i = 0; i < 300; ++i) {
    pieces.emplace_back(16, static_cast<unsigned char>(i));
    size_t data = i % 7 == 0 ? (size_t(1) << ((i / 7) % 21)) : 0;
    if (data) pieces.emplace_back(data, static_cast<unsigned char>(i * 31 + 7));
  }
  std::vector<unsigned char> expected;
  for (auto& p : pieces) expected.insert(expected.end(), p.begin(), p.end());
  total = expected.size();

  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  bool sent = false;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    UpgradableStream<tcp::socket> stream(co_await acceptor.async_accept(asio::use_awaitable));
    auto peer = co_await accept(stream.start_tls(context.current()), "gather-test", std::chrono::seconds(5));
    if (!peer) co_return;
    std::vector<asio::const_buffer> iov;
    for (auto& p : pieces) iov.push_back(asio::buffer(p));
    co_await asio::async_write(stream, iov, asio::use_awaitable);
    sent = true;
  }, asio::detached);

  asio::ssl::context client_ctx(asio::ssl::context::tls_client);
  std::vector<unsigned char> received(total);
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    asio::ssl::stream<tcp::socket> tls(io, client_ctx);
    co_await tls.next_layer().async_connect(acceptor.local_endpoint(), asio::use_awaitable);
    co_await tls.async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
    co_await asio::async_read(tls, asio::buffer(received), asio::use_awaitable);
  }, asio::detached);

  io.run_for(std::chrono::seconds(20));
  CHECK(sent);
  CHECK(total > (1u << 20));
  CHECK(received == expected);
}
