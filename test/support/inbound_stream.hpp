#pragma once
// What gateways published on the inbound stream, decoded as a worker decodes it: for tests
// that check the envelopes an adapter or the REST API built.

#include "fast_redis.hpp"
#include "run_coro.hpp"

#include "stargazer/bus/envelope.hpp"
#include "stargazer/redis/connection.hpp"

#include <boost/asio.hpp>
#include <catch2/catch.hpp>

#include <string>
#include <variant>
#include <vector>

namespace stargazer::test {

// Every envelope on `sg:stream:inbound`, oldest first; one that does not decode fails the test.
inline std::vector<bus::inbound_envelope> inbound_envelopes(const std::string& redis_url) {
  boost::asio::io_context io;
  redis::connection conn(io.get_executor(), fast_redis_settings(redis_url));
  conn.start();
  redis::reply entries;
  run_coro(io, [&]() -> boost::asio::awaitable<void> {
    auto r = co_await conn.command("XRANGE", "sg:stream:inbound", "-", "+");
    if (r) entries = std::move(*r);
  }());
  conn.stop();
  std::vector<bus::inbound_envelope> out;
  for (const auto& entry : entries.elements()) {
    const auto& fields = entry.elements()[1].elements();
    for (std::size_t i = 0; i + 1 < fields.size(); i += 2) {
      if (fields[i].str() != "data") continue;
      auto decoded = bus::decode_inbound(fields[i + 1].str());
      REQUIRE(std::holds_alternative<bus::inbound_envelope>(decoded));
      out.push_back(std::get<bus::inbound_envelope>(std::move(decoded)));
    }
  }
  return out;
}

}  // namespace stargazer::test
