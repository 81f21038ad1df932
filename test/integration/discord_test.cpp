// The Discord platform through the real binary as processes, against the Discord test
// server (test/support/discord, checked with discord.py) and a real redis-server.

#include "child_process.hpp"
#include "discord_server.hpp"
#include "raw_http.hpp"
#include "redis_server.hpp"

#include <catch2/catch.hpp>

#include <signal.h>

#include <functional>
#include <string>
#include <thread>

using namespace stargazer::test;
using namespace std::chrono_literals;

namespace {

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(100ms);
  }
  return done();
}

std::vector<std::string> gateway_args(const redis_server& redis, const discord_test_server& discord,
                                      const std::string& node, std::uint16_t port) {
  return {STARGAZER_BINARY, "--role=gateway", "--redis-url=" + redis.url(), "--node-id=" + node,
          "--http-port=" + std::to_string(port), "--discord-token=" + discord.token(),
          "--discord-api-url=" + discord.api_url(), "--log-level=debug"};
}

std::vector<std::string> worker_args(const redis_server& redis, const std::string& node) {
  return {STARGAZER_BINARY, "--role=worker", "--redis-url=" + redis.url(), "--node-id=" + node,
          "--llm-provider=echo", "--presence-interval=0"};
}

std::string mention(const std::string& user_id) { return R"(,"mentions":[")" + user_id + R"("])"; }

}  // namespace

TEST_CASE("discord: a message round trip through gateway and worker processes", "[discord][process]") {
  redis_server redis;
  discord_test_server discord({"--heartbeat-ms", "2000"});
  const auto channel = discord.channel_id(0, 0);
  const auto bot = discord.bot_user_id();
  child_process gateway(gateway_args(redis, discord, "gw-1", free_port()));
  child_process worker(worker_args(redis, "w-1"));
  INFO(gateway.output());
  REQUIRE(eventually([&] { return discord.connected_sessions() == 1; }, 20s));

  // Addressed by a mention: answered, as a reply to the user's message, with a nonce.
  const auto asked = discord.post_message(channel, "1001", "<@" + bot + "> hello there", mention(bot));
  REQUIRE(eventually([&] { return discord.bot_messages(channel).size() == 1; }, 20s));
  CHECK(discord.bot_messages(channel)[0].find("hello there") != std::string::npos);
  {
    const auto all = discord.channel_messages(channel);
    const auto& reply = all[all.Size() - 1];
    REQUIRE(reply.HasMember("message_reference"));
    CHECK(std::string(reply["message_reference"]["message_id"].GetString()) == asked);
    CHECK(reply.HasMember("nonce"));
  }
  const auto rest = discord.control("GET", "/_test/requests?kind=rest");
  bool enforced = false;
  for (const auto& r : rest["records"].GetArray())
    if (r.HasMember("body") && r["body"].IsObject() && r["body"].HasMember("enforce_nonce")) enforced = true;
  CHECK(enforced);

  // Not addressed: stored as context, not answered.
  discord.post_message(channel, "1002", "just chatting among ourselves");
  std::this_thread::sleep_for(1500ms);
  CHECK(discord.bot_messages(channel).size() == 1);

  // A 4,500-character reply arrives as 3 ordered parts.
  std::string long_text;
  while (long_text.size() < 4500) long_text += "word" + std::to_string(long_text.size() % 10) + " ";
  long_text.resize(4500);
  discord.post_message(channel, "1001", "<@" + bot + "> " + long_text, mention(bot));
  REQUIRE(eventually([&] { return discord.bot_messages(channel).size() == 4; }, 20s));
  const auto parts = discord.bot_messages(channel);
  std::string joined;
  for (std::size_t i = 1; i < 4; ++i) {
    CHECK(parts[i].size() <= 2000);
    joined += parts[i] + " ";
  }
  CHECK(joined.find(long_text.substr(0, 200)) != std::string::npos);
  CHECK(discord.counter("rest_429") == 0);

  gateway.signal(SIGTERM);
  worker.signal(SIGTERM);
  CHECK(gateway.wait(10s) == 0);
  CHECK(worker.wait(10s) == 0);
}

TEST_CASE("discord: a dropped connection resumes, losing and duplicating nothing", "[discord][process]") {
  redis_server redis;
  discord_test_server discord({"--heartbeat-ms", "2000"});
  const auto channel = discord.channel_id(0, 0);
  const auto bot = discord.bot_user_id();
  child_process gateway(gateway_args(redis, discord, "gw-1", free_port()));
  child_process worker(worker_args(redis, "w-1"));
  INFO(gateway.output());
  REQUIRE(eventually([&] { return discord.connected_sessions() == 1; }, 20s));

  // The resume is held back, so the messages posted meanwhile wait in the session's buffer.
  discord.control("POST", "/_test/config", R"({"resume_delay_ms": 1500})");
  discord.control("POST", "/_test/gateway/drop", "{}");
  for (int i = 0; i < 3; ++i) discord.post_message(channel, "1001", "<@" + bot + "> question " + std::to_string(i), mention(bot));
  REQUIRE(eventually([&] { return discord.bot_messages(channel).size() >= 3; }, 25s));
  std::this_thread::sleep_for(1000ms);  // nothing more may come
  const auto replies = discord.bot_messages(channel);
  REQUIRE(replies.size() == 3);
  for (int i = 0; i < 3; ++i) CHECK(replies[i].find("question " + std::to_string(i)) != std::string::npos);
  CHECK(discord.counter("identifies") == 1);
  CHECK(discord.counter("resumes") >= 1);

  // op 7 (reconnect) and op 9 (resumable) recover the same way.
  discord.control("POST", "/_test/gateway/reconnect", "{}");
  REQUIRE(eventually([&] { return discord.counter("resumes") >= 2 && discord.connected_sessions() == 1; }, 20s));
  discord.post_message(channel, "1001", "<@" + bot + "> after reconnect", mention(bot));
  REQUIRE(eventually([&] { return discord.bot_messages(channel).size() == 4; }, 20s));
  CHECK(discord.counter("identifies") == 1);

  gateway.signal(SIGTERM);
  worker.signal(SIGTERM);
  CHECK(gateway.wait(10s) == 0);
  CHECK(worker.wait(10s) == 0);
}

TEST_CASE("discord: a fatal close code stops the shard with a clear error and /readyz fails", "[discord][process]") {
  redis_server redis;
  discord_test_server discord({"--heartbeat-ms", "2000", "--no-privileged"});
  const auto port = free_port();
  child_process gateway(gateway_args(redis, discord, "gw-1", port));
  INFO(gateway.output());
  // The default intents include message content, which this bot may not use: 4014.
  REQUIRE(eventually([&] { return gateway.output().find("disallowed intents") != std::string::npos; }, 20s));
  REQUIRE(wait_for_http(port, 5s, "/healthz"));
  const auto ready = http_get(port, "/readyz");
  CHECK(ready.status == 503);
  CHECK(ready.body.find("disallowed intents") != std::string::npos);
  const auto identifies = discord.counter("identifies");
  std::this_thread::sleep_for(3s);
  CHECK(discord.counter("identifies") == identifies);  // no reconnect loop
  gateway.signal(SIGTERM);
  CHECK(gateway.wait(10s) == 0);
}
