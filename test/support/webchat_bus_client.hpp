#pragma once
// A worker's side of the bus for web chat tests, on a Redis client of the test's own:
// publishes outbound envelopes to the web chat and reads the inbound stream, as a worker would.

#include "fast_redis.hpp"
#include "inbound_stream.hpp"
#include "run_coro.hpp"
#include "wait_until.hpp"

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/redis/connection.hpp"

#include <boost/asio.hpp>
#include <catch2/catch.hpp>

#include <string>
#include <chrono>
#include <system_error>
#include <vector>

namespace stargazer::test {

struct webchat_bus_client {
  explicit webchat_bus_client(const std::string& url)
      : url(url), conn(io.get_executor(), fast_redis_settings(url)), bus(conn, bus::event_bus_settings{}) {
    conn.start();
  }
  ~webchat_bus_client() { conn.stop(); }

  void publish(const bus::outbound_envelope& e) {
    std::error_code ec;
    run_coro(io, [&]() -> boost::asio::awaitable<void> {
      const std::string platform = "webchat";
      auto r = co_await bus.publish_outbound(platform, e);
      if (!r) ec = r.error();
    }());
    REQUIRE_FALSE(ec);
  }

  std::vector<bus::inbound_envelope> inbound() { return inbound_envelopes(url); }

  // The inbound stream once it holds `count` entries (or after 5 s): the web chat shows a
  // message to its room before it publishes it to the bus.
  std::vector<bus::inbound_envelope> inbound(std::size_t count) {
    std::vector<bus::inbound_envelope> entries;
    wait_until([&] { return (entries = inbound()).size() >= count; }, std::chrono::seconds(5));
    return entries;
  }

  std::string url;
  boost::asio::io_context io;
  redis::connection conn;
  bus::event_bus bus;
};

}  // namespace stargazer::test
