// The Redis client's TLS (rediss://) against a real redis-server listening with
// --tls-port: a CA and server certificates made with the openssl CLI for this run,
// verification against the right CA, the system store, a wrong host name, and off.

#include "stargazer/core/error.hpp"
#include "stargazer/redis/connection.hpp"

#include "redis_server.hpp"
#include "fast_redis.hpp"
#include "run_coro.hpp"
#include "tls_material.hpp"

#include <boost/asio/ssl.hpp>
#include <catch2/catch.hpp>

#include <optional>

using namespace stargazer;
using namespace stargazer::redis;
using namespace stargazer::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

// How long a command waits when the handshake can never succeed. The client retries
// every 20..200 ms meanwhile, so last_error is set long before this.
constexpr auto failing_deadline = 1000ms;

// redis-server with its plain port (used by the fixture's PING and by redis-cli) and a
// TLS port serving `cert`. Clients need no certificate of their own.
struct tls_redis {
  std::uint16_t tls_port = 0;
  std::optional<redis_server> server;

  tls_redis(const std::string& cert, const std::string& key, bool also_on_127_0_0_2 = false) {
    const auto& m = certificates();
    // The fixture retries a taken plain port; a taken TLS port is retried here.
    for (int attempt = 0;; ++attempt) {
      tls_port = free_port();
      redis_server_options options;
      options.extra_args = {"--tls-port", std::to_string(tls_port), "--tls-cert-file", cert, "--tls-key-file", key,
                            "--tls-ca-cert-file", m.ca_cert, "--tls-auth-clients", "no"};
      // A later --bind replaces the fixture's "--bind 127.0.0.1".
      if (also_on_127_0_0_2) options.extra_args.insert(options.extra_args.end(), {"--bind", "127.0.0.1 127.0.0.2"});
      try {
        server.emplace(std::move(options));
        return;
      } catch (const std::exception&) {
        if (attempt == 2) throw;
      }
    }
  }

  std::string url(const std::string& host) const { return "rediss://" + host + ":" + std::to_string(tls_port); }
  std::string client_list() const { return server->cli({"CLIENT", "LIST"}); }
  std::string laddr(const std::string& host) const { return "laddr=" + host + ":" + std::to_string(tls_port); }
};

// Sends PING with `deadline` on a connection whose handshake must fail; checks that it
// times out, the connection is down, and last_error names the verification failure.
asio::awaitable<void> expect_verify_failure(connection& conn, std::chrono::milliseconds deadline) {
  request req(request::options{.timeout = deadline});
  req.push("PING");
  const auto started = std::chrono::steady_clock::now();
  auto r = co_await conn.exec(std::move(req));
  const auto took = std::chrono::steady_clock::now() - started;
  CHECK_FALSE(r);
  if (!r) CHECK(r.error() == make_error_code(errc::timeout));
  CHECK(took < deadline + 500ms);
  const auto stats = conn.stats();
  CHECK_FALSE(stats.connected);
  CHECK_THAT(stats.last_error, Catch::Contains("certificate verify failed"));
  CHECK_THAT(stats.last_error, Catch::Contains("tls:"));
}

}  // namespace

TEST_CASE("rediss:// with the server's CA: commands work over the TLS port, by name and by IP", "[redis][tls]") {
  const auto& m = certificates();
  tls_redis redis(m.server_cert, m.server_key);
  asio::io_context io;

  auto by_name = fast_redis_settings(redis.url("localhost"));  // SAN DNS:localhost
  by_name.tls_ca_file = m.ca_cert;
  by_name.client_name = "sg-tls-name";
  auto by_ip = fast_redis_settings(redis.url("127.0.0.1"));    // SAN IP:127.0.0.1
  by_ip.tls_ca_file = m.ca_cert;
  by_ip.client_name = "sg-tls-ip";
  REQUIRE(by_name.server.kind == transport::tls);
  REQUIRE(by_name.tls_verify);

  connection name_conn(io.get_executor(), by_name);
  connection ip_conn(io.get_executor(), by_ip);
  name_conn.start();
  ip_conn.start();
  run_coro(io, [&]() -> asio::awaitable<void> {
    auto set = co_await name_conn.command("SET", "tls:key", "over tls");
    REQUIRE(set);
    CHECK(set->str() == "OK");
    auto get = co_await name_conn.command("GET", "tls:key");
    REQUIRE(get);
    CHECK(get->str() == "over tls");

    const std::string big(256 * 1024, 'x');  // several TLS records each way
    auto set_big = co_await ip_conn.command("SET", "tls:big", big);
    REQUIRE(set_big);
    auto get_big = co_await ip_conn.command("GET", "tls:big");
    REQUIRE(get_big);
    CHECK(get_big->str() == big);
    auto other = co_await ip_conn.command("GET", "tls:key");
    REQUIRE(other);
    CHECK(other->str() == "over tls");
  }(), 5s);
  CHECK(name_conn.stats().connected);
  CHECK(ip_conn.stats().connected);
  CHECK(name_conn.stats().last_error.empty());
  CHECK(ip_conn.stats().endpoint == "tls:127.0.0.1:" + std::to_string(redis.tls_port));

  // The server itself (asked over the plain port) sees both clients on its TLS port.
  const auto clients = redis.client_list();
  INFO(clients);
  std::size_t on_tls_port = 0;
  for (std::size_t at = clients.find(redis.laddr("127.0.0.1")); at != std::string::npos;
       at = clients.find(redis.laddr("127.0.0.1"), at + 1))
    ++on_tls_port;
  CHECK(on_tls_port == 2);
  CHECK_THAT(clients, Catch::Contains("name=sg-tls-name"));
  CHECK_THAT(clients, Catch::Contains("name=sg-tls-ip"));
  CHECK(redis.server->cli({"GET", "tls:key"}) == "over tls");
}

TEST_CASE("rediss:// without a CA file uses the system store, which rejects a private CA", "[redis][tls]") {
  const auto& m = certificates();
  tls_redis redis(m.server_cert, m.server_key);
  asio::io_context io;
  auto settings = fast_redis_settings(redis.url("localhost"));
  REQUIRE(settings.tls_ca_file.empty());
  REQUIRE(settings.tls_verify);
  connection conn(io.get_executor(), settings);
  conn.start();
  run_coro(io, expect_verify_failure(conn, failing_deadline), 5s);
  CHECK_THAT(redis.client_list(), !Catch::Contains("name=stargazer"));
}

TEST_CASE("rediss:// rejects a certificate for another host name, even from the trusted CA", "[redis][tls]") {
  const auto& m = certificates();
  // 127.0.0.2 reaches the same server, but the certificate names only localhost and 127.0.0.1.
  tls_redis redis(m.server_cert, m.server_key, /*also_on_127_0_0_2=*/true);
  // This one presents a certificate for redis.example.invalid to whoever connects.
  tls_redis other(m.other_cert, m.other_key);
  asio::io_context io;

  auto wrong_ip = fast_redis_settings(redis.url("127.0.0.2"));
  wrong_ip.tls_ca_file = m.ca_cert;
  auto wrong_name = fast_redis_settings(other.url("localhost"));
  wrong_name.tls_ca_file = m.ca_cert;
  connection ip_conn(io.get_executor(), wrong_ip);
  connection name_conn(io.get_executor(), wrong_name);
  ip_conn.start();
  name_conn.start();
  int finished = 0;
  run_coro(io, [&]() -> asio::awaitable<void> {
    // Both at once, to keep the suite fast.
    auto ex = co_await asio::this_coro::executor;
    asio::co_spawn(ex, [&]() -> asio::awaitable<void> {
      co_await expect_verify_failure(ip_conn, failing_deadline);
      ++finished;
    }, asio::detached);
    co_await expect_verify_failure(name_conn, failing_deadline);
    ++finished;
    while (finished < 2) {
      asio::steady_timer t(ex, 5ms);
      co_await t.async_wait(asio::use_awaitable);
    }
  }(), 5s);
  CHECK(finished == 2);
  CHECK_THAT(redis.client_list(), !Catch::Contains("name=stargazer"));
  CHECK_THAT(other.client_list(), !Catch::Contains("name=stargazer"));

  // The same CA file with the right name on the same server works: only the name was wrong.
  auto right = fast_redis_settings(redis.url("localhost"));
  right.tls_ca_file = m.ca_cert;
  connection right_conn(io.get_executor(), right);
  right_conn.start();
  run_coro(io, [&]() -> asio::awaitable<void> {
    auto pong = co_await right_conn.command("PING");
    REQUIRE(pong);
    CHECK(pong->str() == "PONG");
  }(), 5s);
}

TEST_CASE("rediss:// with tls_verify = false accepts an unknown CA and a wrong name, still encrypted", "[redis][tls]") {
  const auto& m = certificates();
  tls_redis redis(m.server_cert, m.server_key, /*also_on_127_0_0_2=*/true);
  asio::io_context io;
  auto settings = fast_redis_settings(redis.url("127.0.0.2"));  // not in the SAN, CA not given
  settings.tls_verify = false;
  REQUIRE(settings.tls_ca_file.empty());
  connection conn(io.get_executor(), settings);
  conn.start();
  run_coro(io, [&]() -> asio::awaitable<void> {
    auto set = co_await conn.command("SET", "unverified", "yes");
    REQUIRE(set);
    CHECK(set->str() == "OK");
    auto get = co_await conn.command("GET", "unverified");
    REQUIRE(get);
    CHECK(get->str() == "yes");
  }(), 5s);
  CHECK(conn.stats().connected);
  const auto clients = redis.client_list();
  INFO(clients);
  CHECK_THAT(clients, Catch::Contains(redis.laddr("127.0.0.2")));
  CHECK_THAT(clients, Catch::Contains("name=stargazer"));
}

// redis-server does not show the SNI it got, so a TLS listener of the test's own reports it.
TEST_CASE("rediss:// sends the host name as SNI, and no SNI for an IP address (RFC 6066)", "[redis][tls]") {
  const auto& m = certificates();
  asio::io_context io;
  asio::ssl::context server_tls(asio::ssl::context::tls_server);
  server_tls.use_certificate_chain_file(m.server_cert);
  server_tls.use_private_key_file(m.server_key, asio::ssl::context::pem);
  asio::ip::tcp::acceptor acceptor(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = std::to_string(acceptor.local_endpoint().port());

  // Accepts one connection, completes the handshake and returns the SNI ("-" if none).
  auto sni_of_next_client = [&]() -> asio::awaitable<std::string> {
    auto socket = co_await acceptor.async_accept(asio::use_awaitable);
    asio::ssl::stream<asio::ip::tcp::socket> stream(std::move(socket), server_tls);
    co_await stream.async_handshake(asio::ssl::stream_base::server, asio::use_awaitable);
    const char* name = SSL_get_servername(stream.native_handle(), TLSEXT_NAMETYPE_host_name);
    co_return name != nullptr ? std::string(name) : std::string("-");
  };

  for (const std::string host : {"localhost", "127.0.0.1"}) {
    INFO("host " << host);
    auto settings = fast_redis_settings("rediss://" + host + ":" + port);
    settings.tls_ca_file = m.ca_cert;  // verified as usual: the handshake must succeed
    connection conn(io.get_executor(), settings);
    conn.start();
    const auto sni = run_coro(io, sni_of_next_client(), 5s);
    CHECK(sni == (host == "localhost" ? "localhost" : "-"));
    conn.stop();
  }
}
