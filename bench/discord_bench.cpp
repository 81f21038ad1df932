// Discord's rate limits shared by several gateway processes: N gateway processes (one holds
// the shard, all consume the Discord outbound stream) deliver S sends spread over C
// channels to the Discord test server, which enforces L message creations per W seconds
// per channel and G requests per second globally. Prints the wall time against the
// minimum the limits allow, the 429s, and lost or duplicated messages.

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/redis/connection.hpp"

#include "bench.hpp"
#include "child_process.hpp"
#include "discord_server.hpp"
#include "redis_server.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <set>
#include <thread>

namespace stargazer::bench {

namespace asio = boost::asio;
using namespace std::chrono_literals;

int discord_rate_limits(const args& a) {
  const int gateways = std::stoi(option(a, "--gateways", "3"));
  const int sends = std::stoi(option(a, "--sends", "200"));
  const int channels = std::stoi(option(a, "--channels", "4"));
  const int limit = std::stoi(option(a, "--channel-limit", "5"));
  const double window = std::stod(option(a, "--channel-window", "5"));
  const int global = std::stoi(option(a, "--global", "50"));
  const std::string binary = option(a, "--binary", STARGAZER_BINARY);
  if (gateways < 1 || sends < 1 || channels < 1 || limit < 1 || window <= 0) {
    fmt::print(stderr, "discord: --gateways, --sends, --channels, --channel-limit, --channel-window must be positive\n");
    return 2;
  }
  try {
    test::redis_server redis;
    test::discord_test_server discord({"--guilds", "1", "--channels", std::to_string(channels), "--channel-limit",
                                       std::to_string(limit), "--channel-window-s", fmt::format("{}", window),
                                       "--global-limit", std::to_string(global), "--heartbeat-ms", "5000"});
    std::vector<std::unique_ptr<test::child_process>> procs;
    for (int g = 0; g < gateways; ++g)
      procs.push_back(std::make_unique<test::child_process>(std::vector<std::string>{
          binary, "--role=gateway", "--redis-url=" + redis.url(), fmt::format("--node-id=bench-gw-{}", g),
          fmt::format("--http-port={}", test::free_port()), "--discord-token=" + discord.token(),
          "--discord-api-url=" + discord.api_url(), "--log-level=warn"}));
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (discord.connected_sessions() < 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(100ms);
    std::this_thread::sleep_for(3s);  // every gateway's consumer has joined the group
    std::vector<std::string> ids;
    for (int c = 0; c < channels; ++c) ids.push_back(discord.channel_id(0, static_cast<std::size_t>(c)));

    asio::io_context io;
    redis::connection conn(io.get_executor(), redis::settings_from_url(redis.url()));
    conn.start();
    bus::event_bus bus(conn, {});
    const auto started = std::chrono::steady_clock::now();
    bool published = false;
    asio::co_spawn(io, [&]() -> asio::awaitable<void> {
      for (int i = 0; i < sends; ++i) {
        bus::outbound_envelope e{.type = bus::outbound_type::message,
                                 .channel_id = ids[static_cast<std::size_t>(i % channels)],
                                 .message_key = fmt::format("sg:msg:discord:bench:{}-0:0", i)};
        e.text = fmt::format("bench message {}", i);
        co_await bus.publish_outbound("discord", e);
      }
      published = true;
    }, asio::detached);
    while (!published) io.run_one();  // the connection's own loops keep run() from returning
    conn.stop();

    std::size_t delivered = 0;
    std::set<std::string> texts;
    std::size_t duplicates = 0;
    const auto give_up = started + std::chrono::seconds(static_cast<long>(window * (sends / channels / limit + 4)) + 60);
    while (std::chrono::steady_clock::now() < give_up) {
      delivered = 0;
      for (const auto& id : ids) delivered += discord.bot_messages(id).size();
      if (delivered >= static_cast<std::size_t>(sends)) break;
      std::this_thread::sleep_for(200ms);
    }
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    for (const auto& id : ids)
      for (const auto& t : discord.bot_messages(id))
        if (!texts.insert(t).second) ++duplicates;
    const int per_channel = static_cast<int>(std::ceil(static_cast<double>(sends) / channels));
    // The slower of the two limits: each channel's window, and the global one (per second).
    const double minimum = std::max((std::ceil(static_cast<double>(per_channel) / limit) - 1) * window,
                                    std::ceil(static_cast<double>(sends) / global) - 1);
    fmt::print("discord rate limits: {} gateway process(es), {} sends over {} channels, {} per {} s per channel, {}/s global\n",
               gateways, sends, channels, limit, window, global);
    fmt::print("  delivered {} (lost {}, duplicated {}) in {:.1f} s; the limits allow it in {:.1f} s at the least "
               "({:+.1f} %)\n",
               delivered, sends - static_cast<int>(texts.size()), duplicates, elapsed, minimum,
               minimum > 0 ? 100.0 * (elapsed - minimum) / minimum : 0.0);
    fmt::print("  429 answers: {} (user {}, global {}); invalid requests counted by the server: {}\n",
               discord.counter("rest_429"), discord.counter("rest_429_user"), discord.counter("rest_429_global"),
               discord.counter("invalid_requests"));
    for (auto& p : procs) p->signal(SIGTERM);
    for (auto& p : procs) p->wait(10s);
  } catch (const std::exception& e) {
    fmt::print(stderr, "discord: {}\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace stargazer::bench
