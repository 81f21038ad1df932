// The Redis client against a hostile server and through a Sentinel failover.

#include "stargazer/core/error.hpp"
#include "stargazer/redis/connection.hpp"

#include "hostile_server.hpp"
#include "run_coro.hpp"
#include "sentinel_cluster.hpp"

#include <catch2/catch.hpp>

using namespace stargazer;
using namespace stargazer::redis;
using namespace stargazer::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;

TEST_CASE("a hostile server gets errors and reconnects, never a crash, a hang or unbounded memory", "[redis][hostile]") {
  const auto behaviour = GENERATE(hostile_behaviour::malformed, hostile_behaviour::truncated,
                                  hostile_behaviour::huge_length, hostile_behaviour::deep_nesting,
                                  hostile_behaviour::pong_then_close);
  INFO(to_string(behaviour));
  hostile_server server(behaviour);
  asio::io_context io;
  auto settings = settings_from_url(server.url());
  settings.max_reply_bytes = 256 * 1024;
  settings.reconnect_min = 20ms;
  settings.reconnect_max = 100ms;
  connection conn(io.get_executor(), settings);
  conn.start();
  run_coro(io, [&]() -> asio::awaitable<void> {
    request req(request::options{.timeout = 700ms});
    req.push("GET", "k");
    auto r = co_await conn.exec(std::move(req));
    CHECK_FALSE(r);  // an error, reported by the deadline at the latest
    while (server.connections() < 3) co_await sleep_for(10ms);  // it keeps reconnecting
  }(), 15s);
  CHECK_FALSE(conn.stats().connected);
  CHECK_FALSE(conn.stats().last_error.empty());
  if (behaviour == hostile_behaviour::huge_length) CHECK(conn.stats().last_error.find("larger than") != std::string::npos);
  if (behaviour == hostile_behaviour::malformed) CHECK(conn.stats().last_error.find("bad reply") != std::string::npos);

  // The same client recovers once the server behaves.
  server.set_behaviour(hostile_behaviour::well_behaved);
  run_coro(io, [&]() -> asio::awaitable<void> {
    auto r = co_await conn.command("PING");
    REQUIRE(r);
    CHECK(r->str() == "PONG");
  }(), 10s);
}

TEST_CASE("Sentinel: discover the master, follow a failover to the promoted replica", "[redis][sentinel]") {
  sentinel_cluster cluster;
  asio::io_context io;
  connection_settings settings;
  settings.sentinel.addresses = cluster.sentinel_addresses();
  settings.sentinel.master_name = cluster.master_name();
  settings.reconnect_min = 20ms;
  settings.reconnect_max = 200ms;
  settings.command_timeout = 1000ms;
  connection conn(io.get_executor(), settings);
  conn.start();
  run_coro(io, [&]() -> asio::awaitable<void> {
    auto r = co_await conn.command("SET", "before", "failover");
    REQUIRE(r);
    CHECK(r->str() == "OK");
  }());
  CHECK(conn.stats().endpoint == "127.0.0.1:" + std::to_string(cluster.master_port()));
  // Let the write reach the replica before the master dies.
  CHECK(cluster.master_cli({"WAIT", "1", "2000"}) == "1");

  cluster.kill_master();
  const auto killed = std::chrono::steady_clock::now();
  std::chrono::steady_clock::duration recovered_after{};
  run_coro(io, [&]() -> asio::awaitable<void> {
    for (;;) {
      auto r = co_await conn.command("SET", "after", "failover");
      if (r && r->is_status()) break;
      co_await sleep_for(50ms);
    }
    recovered_after = std::chrono::steady_clock::now() - killed;
    auto before = co_await conn.command("GET", "before");
    CHECK(before->str() == "failover");
  }(), 20s);
  CHECK(conn.stats().endpoint == "127.0.0.1:" + std::to_string(cluster.replica_port()));
  CHECK(recovered_after < 10s);  // failover takes ~2.2 s with down-after 1 s
  CHECK(cluster.replica_cli({"GET", "after"}) == "failover");
}
