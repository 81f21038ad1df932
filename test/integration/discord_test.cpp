// The Discord platform through the real binary as processes, against the Discord test
// server (test/support/discord, checked with discord.py) and a real redis-server.

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/rpc_client.hpp"
#include "stargazer/core/json_value.hpp"
#include "stargazer/redis/connection.hpp"

#include "child_process.hpp"
#include "discord_server.hpp"
#include "raw_http.hpp"
#include "redis_server.hpp"
#include "run_coro.hpp"

#include <catch2/catch.hpp>

#include <signal.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>

using namespace stargazer::test;
using namespace std::chrono_literals;

namespace {

bool poll_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
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

// Publishes outbound envelopes onto the Discord stream as a worker would.
struct outbound_publisher {
  explicit outbound_publisher(const redis_server& redis)
      : conn(io.get_executor(), stargazer::redis::settings_from_url(redis.url())), bus(conn, {}) {
    conn.start();
  }
  ~outbound_publisher() { conn.stop(); }
  void publish(const stargazer::bus::outbound_envelope& e) {
    auto r = run_coro(io, bus.publish_outbound("discord", e));
    REQUIRE(r);
  }
  boost::asio::io_context io;
  stargazer::redis::connection conn;
  stargazer::bus::event_bus bus;
};

std::size_t count_with(const rapidjson::Document& messages, const std::string& field) {
  std::size_t n = 0;
  for (const auto& m : messages.GetArray())
    if (m.HasMember(field.c_str()) && !m[field.c_str()].IsNull() &&
        !(m[field.c_str()].IsArray() && m[field.c_str()].Empty()))
      ++n;
  return n;
}

}  // namespace

TEST_CASE("discord: a message round trip through gateway and worker processes", "[discord][process]") {
  redis_server redis;
  discord_test_server discord({"--heartbeat-ms", "2000"});
  const auto channel = discord.channel_id(0, 0);
  const auto bot = discord.bot_user_id();
  child_process gateway(gateway_args(redis, discord, "gw-1", free_port()));
  child_process worker(worker_args(redis, "w-1"));
  INFO(gateway.output());
  REQUIRE(poll_until([&] { return discord.connected_sessions() == 1; }, 20s));

  // Addressed by a mention: answered, as a reply to the user's message, with a nonce.
  const auto asked = discord.post_message(channel, "1001", "<@" + bot + "> hello there", mention(bot));
  REQUIRE(poll_until([&] { return discord.bot_messages(channel).size() == 1; }, 20s));
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
  REQUIRE(poll_until([&] { return discord.bot_messages(channel).size() == 4; }, 20s));
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
  REQUIRE(poll_until([&] { return discord.connected_sessions() == 1; }, 20s));

  // The resume is held back, so the messages posted meanwhile wait in the session's buffer.
  discord.control("POST", "/_test/config", R"({"resume_delay_ms": 1500})");
  discord.control("POST", "/_test/gateway/drop", "{}");
  for (int i = 0; i < 3; ++i) discord.post_message(channel, "1001", "<@" + bot + "> question " + std::to_string(i), mention(bot));
  REQUIRE(poll_until([&] { return discord.bot_messages(channel).size() >= 3; }, 25s));
  std::this_thread::sleep_for(1000ms);  // nothing more may come
  const auto replies = discord.bot_messages(channel);
  REQUIRE(replies.size() == 3);
  for (int i = 0; i < 3; ++i) CHECK(replies[i].find("question " + std::to_string(i)) != std::string::npos);
  CHECK(discord.counter("identifies") == 1);
  CHECK(discord.counter("resumes") >= 1);

  // op 7 (reconnect) and op 9 (resumable) recover the same way.
  discord.control("POST", "/_test/gateway/reconnect", "{}");
  REQUIRE(poll_until([&] { return discord.counter("resumes") >= 2 && discord.connected_sessions() == 1; }, 20s));
  discord.post_message(channel, "1001", "<@" + bot + "> after reconnect", mention(bot));
  REQUIRE(poll_until([&] { return discord.bot_messages(channel).size() == 4; }, 20s));
  CHECK(discord.counter("identifies") == 1);

  // A missing heartbeat ACK: the connection is a zombie; it is dropped and resumed.
  const auto resumes = discord.counter("resumes");
  discord.control("POST", "/_test/gateway/ack", R"({"enabled": false})");
  REQUIRE(poll_until([&] { return discord.counter("resumes") > resumes; }, 20s));
  discord.control("POST", "/_test/gateway/ack", R"({"enabled": true})");
  REQUIRE(poll_until([&] { return discord.connected_sessions() == 1; }, 20s));

  // op 9 with d: false ends the session: a new one is identified after 1-5 s.
  discord.control("POST", "/_test/gateway/invalid_session", R"({"d": false})");
  REQUIRE(poll_until([&] { return discord.counter("identifies") == 2 && discord.connected_sessions() == 1; }, 20s));
  discord.post_message(channel, "1001", "<@" + bot + "> after a new session", mention(bot));
  REQUIRE(poll_until([&] { return discord.bot_messages(channel).size() == 5; }, 20s));

  // Malformed frames, unknown opcodes and event types are logged and survived.
  discord.control("POST", "/_test/gateway/raw", R"({"text": "{not json"})");
  discord.control("POST", "/_test/gateway/raw", R"({"text": "{\"op\": 99, \"d\": null}"})");
  discord.control("POST", "/_test/gateway/dispatch", R"({"t": "SOMETHING_NEW", "d": {"x": 1}})");
  discord.post_message(channel, "1001", "<@" + bot + "> still there?", mention(bot));
  REQUIRE(poll_until([&] { return discord.bot_messages(channel).size() == 6; }, 20s));
  // Invalid zlib data breaks the stream: the connection is dropped and the session resumed.
  const auto resumes_before_zlib = discord.counter("resumes");
  discord.control("POST", "/_test/gateway/raw", R"({"binary_b64": "Z2FyYmFnZQAA//8=", "through_zlib": false})");
  REQUIRE(poll_until([&] { return discord.counter("resumes") > resumes_before_zlib; }, 20s));
  discord.post_message(channel, "1001", "<@" + bot + "> and now?", mention(bot));
  REQUIRE(poll_until([&] { return discord.bot_messages(channel).size() == 7; }, 20s));
  CHECK(discord.counter("identifies") == 2);

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
  REQUIRE(poll_until([&] { return gateway.output().find("disallowed intents") != std::string::npos; }, 20s));
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

TEST_CASE("discord: outbound files, buttons, reactions, and a send repeated after a lost marker is not posted twice",
          "[discord][process]") {
  using stargazer::bus::outbound_envelope;
  using stargazer::bus::outbound_type;
  redis_server redis;
  discord_test_server discord({"--heartbeat-ms", "2000"});
  const auto channel = discord.channel_id(0, 0);
  child_process gateway(gateway_args(redis, discord, "gw-1", free_port()));
  REQUIRE(poll_until([&] { return discord.connected_sessions() == 1; }, 20s));
  outbound_publisher out(redis);

  // A file within the upload limit goes as multipart; one over it becomes a text message.
  outbound_envelope file{.type = outbound_type::file, .channel_id = channel, .message_key = "sg:msg:discord:c:1-0:0"};
  file.file_data = "a,b\n1,2\n";
  file.filename = "table.csv";
  file.mimetype = "text/csv";
  out.publish(file);
  outbound_envelope big{.type = outbound_type::file, .channel_id = channel, .message_key = "sg:msg:discord:c:2-0:0"};
  big.file_data = std::string(11 * 1024 * 1024, 'x');
  big.filename = "huge.bin";
  out.publish(big);
  REQUIRE(poll_until([&] { return discord.bot_messages(channel).size() == 2; }, 20s));
  const auto messages = discord.channel_messages(channel);
  CHECK(count_with(messages, "attachments") == 1);
  CHECK(discord.bot_messages(channel)[1].find("too large to upload") != std::string::npos);

  // Buttons: one action row, the ids as custom_id.
  outbound_envelope buttons{.type = outbound_type::buttons, .channel_id = channel, .message_key = "sg:msg:discord:c:3-0:0"};
  buttons.text = "Pick one";
  buttons.buttons = {{"Yes", "answer-yes", ""}, {"No", "answer-no", ""}};
  out.publish(buttons);
  REQUIRE(poll_until([&] { return discord.bot_messages(channel).size() == 3; }, 20s));
  CHECK(count_with(discord.channel_messages(channel), "components") == 1);

  // A reaction on a user's message.
  const auto user_message = discord.post_message(channel, "1001", "react to me");
  outbound_envelope reaction{.type = outbound_type::reaction, .channel_id = channel};
  reaction.message_id = user_message;
  reaction.emoji = "👍";
  out.publish(reaction);
  REQUIRE(poll_until([&] {
    const auto all = discord.channel_messages(channel);
    for (const auto& m : all.GetArray())
      if (std::string(m["id"].GetString()) == user_message && m.HasMember("reactions") && m["reactions"].IsArray() &&
          !m["reactions"].Empty())
        return true;
    return false;
  }, 20s));

  // A gateway that died after Discord accepted a message but before writing the completion
  // marker: the redelivery carries the same nonce, and Discord returns the first message.
  outbound_envelope text{.type = outbound_type::message, .channel_id = channel, .message_key = "sg:msg:discord:c:4-0:0"};
  text.text = "only once";
  out.publish(text);
  REQUIRE(poll_until([&] { return discord.bot_messages(channel).size() == 4; }, 20s));
  REQUIRE(poll_until([&] { return redis.cli({"HGET", text.message_key, "message_id"}).size() > 0; }, 5s));
  redis.cli({"DEL", text.message_key, "sg:outbound:claim:" + text.message_key});  // the marker never written
  out.publish(text);
  REQUIRE(poll_until([&] { return redis.cli({"HGET", text.message_key, "message_id"}).size() > 0; }, 20s));
  std::this_thread::sleep_for(500ms);
  CHECK(discord.bot_messages(channel).size() == 4);
  CHECK(discord.counter("nonce_dedup_hits") >= 1);

  gateway.signal(SIGTERM);
  CHECK(gateway.wait(10s) == 0);
}

TEST_CASE("discord: a gateway SIGKILLed after Discord accepted a reply and before its marker posts it once",
          "[discord][process]") {
  redis_server redis;
  discord_test_server discord({"--heartbeat-ms", "2000"});
  const auto channel = discord.channel_id(0, 0);
  const auto bot = discord.bot_user_id();
  const auto port = free_port();
  auto gateway = std::make_unique<child_process>(gateway_args(redis, discord, "gw-1", port));
  child_process worker(worker_args(redis, "w-1"));
  REQUIRE(poll_until([&] { return discord.connected_sessions() == 1; }, 20s));

  // Discord creates the reply, then its answer is held back for 5 s: the gateway never
  // learns the message id and dies meanwhile, its outbound entry unacknowledged.
  discord.control("POST", "/_test/force", R"({"count":1,"method":"POST","match":"/messages","hold_s":5})");
  discord.post_message(channel, "1001", "<@" + bot + "> say it once", mention(bot));
  REQUIRE(poll_until([&] { return discord.bot_messages(channel).size() == 1; }, 20s));
  gateway->signal(SIGKILL);
  gateway->wait(10s);
  CHECK(discord.counter("nonce_dedup_hits") == 0);

  // Restarted under the same node id, it takes its pending entry back at once and sends it
  // again with the same nonce: Discord answers with the first message, nothing new appears.
  gateway = std::make_unique<child_process>(gateway_args(redis, discord, "gw-1", port));
  REQUIRE(poll_until([&] { return discord.counter("nonce_dedup_hits") >= 1; }, 30s));
  std::this_thread::sleep_for(1s);
  const auto replies = discord.bot_messages(channel);
  REQUIRE(replies.size() == 1);
  CHECK(replies[0].find("say it once") != std::string::npos);
  CHECK(redis.cli({"XPENDING", "sg:stream:outbound:discord", "sg:gateway:discord"}).rfind("0", 0) == 0);
  gateway->signal(SIGTERM);
  CHECK(gateway->wait(10s) == 0);
}

TEST_CASE("discord: the guild owner may change the channel's mode, another member is refused politely",
          "[discord][process]") {
  redis_server redis;
  discord_test_server discord({"--heartbeat-ms", "2000"});
  const auto channel = discord.channel_id(0, 0);
  const auto owner = stargazer::json::string_member(discord.control("GET", "/_test/state")["guilds"][0], "owner_id");
  REQUIRE_FALSE(owner.empty());
  child_process gateway(gateway_args(redis, discord, "gw-1", free_port()));
  child_process worker(worker_args(redis, "w-1"));
  REQUIRE(poll_until([&] { return discord.connected_sessions() == 1; }, 20s));

  discord.post_message(channel, "1002", "!mode always");
  REQUIRE(poll_until([&] { return discord.bot_messages(channel).size() == 1; }, 20s));
  CHECK(discord.bot_messages(channel)[0].find("only admins") != std::string::npos);
  CHECK(redis.cli({"EXISTS", "sg:channel:discord:" + channel + ":mode"}) == "0");

  discord.post_message(channel, owner, "!mode always");
  REQUIRE(poll_until([&] { return discord.bot_messages(channel).size() == 2; }, 20s));
  CHECK(discord.bot_messages(channel)[1].find("Mode set to always") != std::string::npos);
  CHECK(redis.cli({"GET", "sg:channel:discord:" + channel + ":mode"}) == "always");
  CHECK(redis.cli({"HGET", "sg:discord:guild:" + discord.guild_id(0) + ":admins", "owner"}) == owner);

  // Now every message there is answered, addressed or not; the bot's replies are in the
  // history the model reads.
  discord.post_message(channel, "1002", "just chatting among ourselves");
  REQUIRE(poll_until([&] { return discord.bot_messages(channel).size() == 3; }, 20s));
  CHECK(redis.cli({"ZCARD", "channel_msgs:discord:" + channel}) == "6");
  gateway.signal(SIGTERM);
  CHECK(gateway.wait(10s) == 0);
}

TEST_CASE("discord: button clicks are acknowledged and answered, reactions are published as context",
          "[discord][process]") {
  redis_server redis;
  discord_test_server discord({"--heartbeat-ms", "2000"});
  const auto channel = discord.channel_id(0, 0);
  child_process gateway(gateway_args(redis, discord, "gw-1", free_port()));
  child_process worker(worker_args(redis, "w-1"));
  REQUIRE(poll_until([&] { return discord.connected_sessions() == 1; }, 20s));
  const auto bot = discord.bot_user_id();

  const auto shown = discord.post_message(channel, "1003", "a message with buttons");  // the clicked message
  const auto clicked = discord.control(
      "POST", "/_test/interactions",
      R"({"channel_id":")" + channel + R"(","message_id":")" + shown +
          R"(","user":{"id":"1001","username":"ada"},"custom_id":"blue-pill"})");
  const std::string interaction = clicked["interaction"]["id"].GetString();
  REQUIRE(poll_until([&] { return discord.bot_messages(channel).size() == 1; }, 20s));
  CHECK(discord.bot_messages(channel)[0].find("blue-pill") != std::string::npos);
  const auto ack = discord.control("GET", "/_test/interactions/" + interaction);
  CHECK(ack["acknowledged"].GetBool());
  CHECK(ack["within_deadline"].GetBool());

  const auto before = std::stoi(redis.cli({"XLEN", "sg:stream:inbound"}));
  const auto target = discord.post_message(channel, "1002", "nice one");
  discord.control("POST", "/_test/reactions",
                  R"({"channel_id":")" + channel + R"(","message_id":")" + target +
                      R"(","user":{"id":"1002","username":"bob"},"emoji":{"name":"🎉"}})");
  REQUIRE(poll_until([&] { return std::stoi(redis.cli({"XLEN", "sg:stream:inbound"})) == before + 2; }, 10s));
  std::this_thread::sleep_for(1000ms);
  CHECK(discord.bot_messages(channel).size() == 1);  // neither is addressed to the bot
  (void)bot;

  gateway.signal(SIGTERM);
  worker.signal(SIGTERM);
  CHECK(gateway.wait(10s) == 0);
  CHECK(worker.wait(10s) == 0);
}

TEST_CASE("discord: two gateway processes share 4 shards, and when one is killed the other resumes its shards",
          "[discord][process]") {
  redis_server redis;
  discord_test_server discord({"--heartbeat-ms", "2000", "--shards", "4", "--guilds", "4", "--max-concurrency", "4"});
  child_process a(gateway_args(redis, discord, "gw-a", free_port()));
  child_process b(gateway_args(redis, discord, "gw-b", free_port()));
  child_process worker(worker_args(redis, "w-1"));
  INFO(a.output() + b.output());
  REQUIRE(poll_until([&] { return discord.connected_sessions() == 4; }, 40s));
  const auto owners = [&] {
    std::map<std::string, int> held;
    for (int i = 0; i < 4; ++i) ++held[redis.cli({"GET", "sg:discord:shard:" + std::to_string(i) + ":owner"})];
    return held;
  };
  REQUIRE(poll_until([&] { auto h = owners(); return h["gw-a"] == 2 && h["gw-b"] == 2; }, 20s));
  const auto identifies = discord.counter("identifies");

  a.signal(SIGKILL);
  a.wait(5s);
  const auto killed = std::chrono::steady_clock::now();
  REQUIRE(poll_until([&] { return owners()["gw-b"] == 4 && discord.connected_sessions() == 4; }, 20s));
  const auto took = std::chrono::steady_clock::now() - killed;
  CHECK(took < 10s);
  CHECK(discord.counter("identifies") == identifies);  // resumed, not identified anew
  CHECK(discord.counter("resumes") >= 2);

  // Every guild's channel is answered, by the process that holds its shard now.
  const auto bot = discord.bot_user_id();
  for (std::size_t g = 0; g < 4; ++g) discord.post_message(discord.channel_id(g, 0), "1001", "<@" + bot + "> ping " + std::to_string(g), mention(bot));
  for (std::size_t g = 0; g < 4; ++g)
    CHECK(poll_until([&] { return discord.bot_messages(discord.channel_id(g, 0)).size() == 1; }, 20s));

  b.signal(SIGTERM);
  worker.signal(SIGTERM);
  CHECK(b.wait(10s) == 0);
  CHECK(worker.wait(10s) == 0);
}

TEST_CASE("discord: two gateway processes share the rate limits: no 429, nothing lost or duplicated",
          "[discord][process]") {
  using stargazer::bus::outbound_envelope;
  using stargazer::bus::outbound_type;
  redis_server redis;
  discord_test_server discord({"--heartbeat-ms", "5000", "--channels", "2", "--channel-limit", "4",
                               "--channel-window-s", "1", "--global-limit", "50"});
  const std::vector<std::string> channels{discord.channel_id(0, 0), discord.channel_id(0, 1)};
  child_process a(gateway_args(redis, discord, "gw-a", free_port()));
  child_process b(gateway_args(redis, discord, "gw-b", free_port()));
  REQUIRE(poll_until([&] { return discord.connected_sessions() == 1; }, 20s));
  std::this_thread::sleep_for(2s);  // both outbound consumers are in the group
  outbound_publisher out(redis);
  constexpr int sends = 24;
  for (int i = 0; i < sends; ++i) {
    outbound_envelope e{.type = outbound_type::message, .channel_id = channels[static_cast<std::size_t>(i % 2)],
                        .message_key = "sg:msg:discord:rl:" + std::to_string(i) + "-0:0"};
    e.text = "limited " + std::to_string(i);
    out.publish(e);
  }
  REQUIRE(poll_until([&] {
    return discord.bot_messages(channels[0]).size() + discord.bot_messages(channels[1]).size() >= sends;
  }, 40s));
  std::this_thread::sleep_for(500ms);
  std::set<std::string> seen;
  std::size_t total = 0;
  for (const auto& c : channels)
    for (const auto& text : discord.bot_messages(c)) {
      seen.insert(text);
      ++total;
    }
  CHECK(total == static_cast<std::size_t>(sends));
  CHECK(seen.size() == static_cast<std::size_t>(sends));
  CHECK(discord.counter("rest_429") == 0);
  CHECK(discord.counter("invalid_requests") == 0);
  a.signal(SIGTERM);
  b.signal(SIGTERM);
  CHECK(a.wait(10s) == 0);
  CHECK(b.wait(10s) == 0);
}

TEST_CASE("discord: typing repeats until stopped, presence reaches the gateway, history answers the worker's RPC",
          "[discord][process]") {
  using stargazer::bus::outbound_envelope;
  using stargazer::bus::outbound_type;
  redis_server redis;
  discord_test_server discord({"--heartbeat-ms", "5000"});
  const auto channel = discord.channel_id(0, 0);
  child_process gateway(gateway_args(redis, discord, "gw-1", free_port()));
  REQUIRE(poll_until([&] { return discord.connected_sessions() == 1; }, 20s));
  outbound_publisher out(redis);
  const auto typing_posts = [&] {
    const auto rest = discord.control("GET", "/_test/requests?kind=rest");
    int n = 0;
    for (const auto& r : rest["records"].GetArray())
      if (std::string(r["path"].GetString()).ends_with("/typing")) ++n;
    return n;
  };

  // Typing: at once, again after 8 s (Discord shows it for 10 s), and no more once stopped.
  out.publish(outbound_envelope{.type = outbound_type::start_typing, .channel_id = channel});
  REQUIRE(poll_until([&] { return typing_posts() == 1; }, 10s));
  REQUIRE(poll_until([&] { return typing_posts() == 2; }, 12s));
  out.publish(outbound_envelope{.type = outbound_type::stop_typing, .channel_id = channel});
  std::this_thread::sleep_for(9s);
  CHECK(typing_posts() == 2);

  // Presence: a custom status on the shard's session.
  outbound_envelope presence{.type = outbound_type::presence};
  presence.text = "reading the docs";
  presence.emoji = "📚";
  out.publish(presence);
  REQUIRE(poll_until([&] {
    const auto state = discord.control("GET", "/_test/state");
    for (const auto& s : state["sessions"].GetArray())
      if (s.HasMember("presence") && s["presence"].IsObject()) {
        const auto text = stargazer::json::to_string(s["presence"]);
        if (text.find("reading the docs") != std::string::npos) return true;
      }
    return false;
  }, 10s));

  // History: the worker's fetch_channel_history RPC, answered from GET /channels/{id}/messages.
  discord.post_message(channel, "1001", "first words");
  discord.post_message(channel, "1002", "second words");
  stargazer::bus::rpc_client rpc(out.bus, stargazer::redis::settings_from_url(redis.url()));
  auto reply = run_coro(out.io, rpc.call("discord", "fetch_channel_history", R"({"limit":10})", channel, "t-1"));
  REQUIRE(reply);
  REQUIRE(reply->ok);
  const auto first = reply->result_json.find("first words");
  const auto second = reply->result_json.find("second words");
  CHECK(first != std::string::npos);
  CHECK(second != std::string::npos);
  CHECK(first < second);  // oldest first

  gateway.signal(SIGTERM);
  CHECK(gateway.wait(10s) == 0);
}
