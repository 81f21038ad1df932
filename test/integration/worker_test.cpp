// The worker's parts against a real redis-server: the status leader lease and the proxy
// adapter's envelopes.

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/rpc_client.hpp"
#include "stargazer/bus/stream_entry.hpp"
#include "stargazer/worker/leader_lease.hpp"
#include "stargazer/worker/proxy_adapter.hpp"

#include "redis_server.hpp"
#include "run_coro.hpp"

#include <catch2/catch.hpp>

using namespace stargazer;
using namespace stargazer::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;

TEST_CASE("one of two workers holds the status lease; a clean stop hands it over", "[worker][lease]") {
  redis_server server;
  asio::io_context io;
  redis::connection conn(io.get_executor(), redis::settings_from_url(server.url()));
  conn.start();
  worker::leader_lease_settings s;
  s.ttl = 60s;
  s.check_interval = 1h;  // checks are run by hand
  worker::leader_lease a(conn, "worker-a", s), b(conn, "worker-b", s);
  run_coro(io, [&]() -> asio::awaitable<void> {
    CHECK(co_await a.check());
    CHECK_FALSE(co_await b.check());
    CHECK(co_await a.check());  // renewal by the holder
    CHECK(a.is_leader());
    CHECK_FALSE(b.is_leader());
  }());
  CHECK(server.cli({"GET", "sg:leader:status"}) == "worker-a");
  const auto ttl = std::stoi(server.cli({"TTL", "sg:leader:status"}));
  CHECK(ttl > 50);
  CHECK(ttl <= 60);
  run_coro(io, [&]() -> asio::awaitable<void> {
    co_await a.stop(1s);
    CHECK_FALSE(a.is_leader());
    CHECK(co_await b.check());
  }());
  CHECK(server.cli({"GET", "sg:leader:status"}) == "worker-b");

  SECTION("an expired lease is taken by the other worker") {
    server.cli({"PEXPIRE", "sg:leader:status", "1"});
    run_coro(io, [&]() -> asio::awaitable<void> {
      co_await sleep_for(20ms);
      CHECK(co_await a.check());
    }());
    CHECK(server.cli({"GET", "sg:leader:status"}) == "worker-a");
  }
  conn.stop();
}

TEST_CASE("the proxy adapter publishes outbound envelopes with the turn's keys, trace and nonce", "[worker][proxy]") {
  redis_server server;
  asio::io_context io;
  const auto settings = redis::settings_from_url(server.url());
  redis::connection conn(io.get_executor(), settings);
  conn.start();
  bus::event_bus bus(conn, bus::event_bus_settings{});
  bus::rpc_client rpc(bus, settings, 300ms);
  bus::turn t;
  t.entry_id = "1-1";
  t.message.platform = "redis";
  t.message.channel_id = "room";
  t.message.trace_id = "trace-1";
  t.message.response_nonce = "nonce-1";
  worker::proxy_adapter adapter(bus, rpc, "redis", {"star", "Star"}, &t);
  CHECK(adapter.name() == "redis");
  run_coro(io, [&]() -> asio::awaitable<void> {
    co_await adapter.start_typing("room");
    auto first = co_await adapter.send("room", "hello", {});
    auto file = co_await adapter.send_file("room", std::string("\x00\x01", 2), "a.bin", "application/octet-stream", {});
    co_await adapter.stop_typing("room");
    REQUIRE(first);
    REQUIRE(file);
    CHECK(*first == t.message_key(0));
    CHECK(*file == t.message_key(1));
    // No gateway answers: the RPC times out and the history is empty, not an exception.
    auto history = co_await adapter.fetch_history("room", 5);
    CHECK(history.empty());
    CHECK(adapter.last_rpc_error().find("fetch_channel_history") != std::string::npos);
  }());
  auto range = run_coro(io, [&]() -> asio::awaitable<result<redis::reply>> {
    co_return co_await conn.command("XRANGE", "sg:stream:outbound:redis", "-", "+");
  }());
  REQUIRE(range);
  auto entries = bus::parse_entries(*range);
  REQUIRE(entries.size() == 5);  // typing, message, file, typing, RPC request
  std::vector<bus::outbound_envelope> envelopes;
  for (const auto& e : entries) {
    auto decoded = bus::decode_outbound(e.field("data"));
    REQUIRE(std::holds_alternative<bus::outbound_envelope>(decoded));
    envelopes.push_back(std::get<bus::outbound_envelope>(decoded));
  }
  CHECK(envelopes[0].type == bus::outbound_type::start_typing);
  CHECK(envelopes[0].message_key.empty());
  CHECK(envelopes[1].type == bus::outbound_type::message);
  CHECK(envelopes[1].text == "hello");
  CHECK(envelopes[1].message_key == t.message_key(0));
  CHECK(envelopes[1].trace_id == "trace-1");
  CHECK(envelopes[1].response_nonce == "nonce-1");
  CHECK(envelopes[2].type == bus::outbound_type::file);
  CHECK(envelopes[2].file_data == std::string("\x00\x01", 2));
  CHECK(envelopes[3].type == bus::outbound_type::stop_typing);
  CHECK(envelopes[4].type == bus::outbound_type::rpc_request);
  CHECK(envelopes[4].rpc_method == "fetch_channel_history");
  conn.stop();
}
