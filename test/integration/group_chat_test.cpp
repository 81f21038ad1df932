// Group chats through the real binary: worker processes on a real redis-server with the
// OpenAI-compatible test server as their model. Messages are put on the inbound stream as
// a gateway would; replies are read from the outbound streams. For the Discord platform
// (backfill, heartbeat) a gateway half runs in this process: an outbound consumer and
// dispatcher over a scripted adapter, answering the workers' RPCs.

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/outbound_consumer.hpp"
#include "stargazer/bus/stream_entry.hpp"
#include "stargazer/platform/dispatcher.hpp"
#include "stargazer/platform/message_cache.hpp"
#include "stargazer/redis/connection.hpp"
#include "stargazer/worker/group_chat_rules.hpp"

#include "child_process.hpp"
#include "fake_llm_server.hpp"
#include "raw_http.hpp"
#include "redis_server.hpp"
#include "run_coro.hpp"

#include <catch2/catch.hpp>

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace stargazer;
using namespace stargazer::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

bool poll_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return done();
}

double now_unix() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// A worker process answering through `llm`; presence and heartbeat off unless `extra` says.
std::vector<std::string> worker_args(const redis_server& redis, const fake_llm_server& llm, const std::string& node,
                                     const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args{STARGAZER_BINARY,      "--role=worker",         "--redis-url=" + redis.url(),
                                "--node-id=" + node,   "--llm-provider=openai", "--llm-base-url=" + llm.base_url(),
                                "--llm-max-retries=0", "--log-level=debug"};
  // Quiet defaults a test may override (a flag given twice is an error).
  for (const std::string flag : {"--presence-interval=0", "--heartbeat-interval=0", "--typing-delay-ms=60000"}) {
    const auto name = flag.substr(0, flag.find('=') + 1);
    if (std::none_of(extra.begin(), extra.end(), [&](const std::string& e) { return e.rfind(name, 0) == 0; }))
      args.push_back(flag);
  }
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}
const std::vector<std::string> worker_env{"SG_LLM_API_KEY=sk-test"};

// The bus as a gateway sees it: puts messages on the inbound stream, reads what workers
// published on the outbound streams.
struct bus_client {
  explicit bus_client(const redis_server& redis)
      : server(redis), conn(io.get_executor(), stargazer::redis::settings_from_url(redis.url())), bus(conn, {}) {
    conn.start();
  }
  ~bus_client() { conn.stop(); }

  bus::inbound_envelope message(const std::string& platform, const std::string& channel, const std::string& text,
                                bool addressed) {
    bus::inbound_envelope e;
    e.platform = platform;
    e.channel_id = channel;
    e.user_id = "u-ada";
    e.username = "Ada";
    e.content = text;
    e.is_addressed = addressed;
    e.message_id = "m" + std::to_string(++sequence);
    e.timestamp = started + sequence * 0.01;  // increasing, whatever the clock does
    e.trace_id = "t" + std::to_string(sequence);
    return e;
  }

  // Publishes `e`; its inbound entry id.
  std::string inject(const bus::inbound_envelope& e) {
    auto id = run_coro(io, bus.publish_inbound(e));
    REQUIRE(id);
    return *id;
  }

  // Whether a worker finished the entry's turn: acknowledged (delivered to the group and
  // no longer pending), as the order mark is written before the acknowledgement.
  bool done(const std::string& entry_id) const {
    const auto acked = server.cli({"EVAL", R"lua(
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) > 0 then return 0 end
local function parts(id) local ms, n = string.match(id, '(%d+)-(%d+)') return tonumber(ms), tonumber(n) end
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  for i = 1, #group, 2 do
    if group[i] == 'name' and group[i + 1] ~= ARGV[1] then break end
    if group[i] == 'last-delivered-id' then
      local dms, dn = parts(group[i + 1])
      local ems, en = parts(ARGV[2])
      if dms > ems or (dms == ems and dn >= en) then return 1 end
      return 0
    end
  end
end
return 0)lua", "1", "sg:stream:inbound", "sg:workers", entry_id});
    return acked == "1";
  }

  // Publishes and waits until a worker finished it.
  void turn(const bus::inbound_envelope& e, std::chrono::milliseconds timeout = 20s) {
    const auto id = inject(e);
    INFO("turn of " << e.platform << ":" << e.channel_id << " '" << e.content << "'");
    REQUIRE(poll_until([&] { return done(id); }, timeout));
  }

  std::vector<bus::outbound_envelope> outbound(const std::string& platform) {
    const auto stream = "sg:stream:outbound:" + platform;
    auto range = run_coro(io, [&]() -> asio::awaitable<result<stargazer::redis::reply>> {
      co_return co_await conn.command("XRANGE", stream, "-", "+");
    }());
    REQUIRE(range);
    std::vector<bus::outbound_envelope> out;
    if (!range->is_array()) return out;
    for (const auto& entry : bus::parse_entries(*range)) {
      auto decoded = bus::decode_outbound(entry.field("data"));
      if (auto* e = std::get_if<bus::outbound_envelope>(&decoded)) out.push_back(std::move(*e));
    }
    return out;
  }

  // The texts the workers sent to a channel.
  std::vector<std::string> replies(const std::string& platform, const std::string& channel) {
    std::vector<std::string> texts;
    for (const auto& e : outbound(platform))
      if (e.type == bus::outbound_type::message && e.channel_id == channel) texts.push_back(e.text);
    return texts;
  }

  void store(const std::string& platform, const std::string& channel, const platform::cached_message& m) {
    platform::message_cache cache(conn);
    CHECK_FALSE(run_coro(io, cache.store(platform, channel, m)));
  }

  const redis_server& server;
  asio::io_context io;
  stargazer::redis::connection conn;
  bus::event_bus bus;
  double started = now_unix();
  int sequence = 0;
};

// The model's requests of one kind (by their prompt's opening words), for assertions.
struct request_log {
  void add(std::string body) {
    std::lock_guard lock(mutex);
    bodies.push_back(std::move(body));
  }
  std::vector<std::string> all() const {
    std::lock_guard lock(mutex);
    return bodies;
  }
  std::size_t size() const {
    std::lock_guard lock(mutex);
    return bodies.size();
  }
  mutable std::mutex mutex;
  std::vector<std::string> bodies;
};

std::size_t count_kind(const fake_llm_server& llm, std::string_view opening) {
  std::size_t n = 0;
  for (const auto& r : llm.requests()) n += contains(r.body, opening);
  return n;
}

// A Discord gateway's adapter for the tests: scripted history, heartbeat skips, recorded sends.
class scripted_discord final : public platform::platform_adapter {
public:
  std::string_view name() const override { return "discord"; }
  platform::task<void> start() override { co_return; }
  platform::task<void> stop() override { co_return; }
  bool is_running() const override { return true; }
  platform::bot_identity identity() const override { return {"bot", "Star"}; }

  platform::task<result<std::string>> send(const std::string& channel_id, const std::string& text,
                                           const platform::send_context&) override {
    std::lock_guard lock(mutex);
    sent.emplace_back(channel_id, text);
    co_return "sent-" + std::to_string(sent.size());
  }
  platform::task<result<std::string>> send_file(const std::string& channel_id, const std::string&,
                                                const std::string& filename, const std::string&,
                                                const platform::send_context& ctx) override {
    const auto text = "[file] " + filename;  // named: GCC 12 and temporaries in co_await
    co_return co_await send(channel_id, text, ctx);
  }
  platform::task<result<std::string>> send_with_buttons(const std::string& channel_id, const std::string& text,
                                                        const std::vector<bus::button>&,
                                                        const platform::send_context& ctx) override {
    co_return co_await send(channel_id, text, ctx);
  }
  platform::task<void> start_typing(const std::string&) override { co_return; }
  platform::task<void> stop_typing(const std::string&) override { co_return; }
  platform::task<bool> add_reaction(const std::string&, const std::string&, const std::string&) override {
    co_return true;
  }
  platform::task<void> set_presence(const std::string&, const std::string&) override { co_return; }
  platform::task<std::vector<platform::history_message>> fetch_history(const std::string& channel_id,
                                                                       int limit) override {
    std::lock_guard lock(mutex);
    ++history_calls[channel_id];
    auto h = history[channel_id];
    if (static_cast<int>(h.size()) > limit) h.resize(static_cast<std::size_t>(limit));
    co_return h;
  }
  platform::task<bool> is_channel_valid(const std::string&) override { co_return true; }
  platform::task<bool> should_skip_channel_heartbeat(const std::string& channel_id) override {
    std::lock_guard lock(mutex);
    co_return skip_heartbeat.contains(channel_id);
  }

  std::vector<std::string> sent_to(const std::string& channel_id) const {
    std::lock_guard lock(mutex);
    std::vector<std::string> out;
    for (const auto& [c, text] : sent)
      if (c == channel_id) out.push_back(text);
    return out;
  }
  std::size_t sent_count() const {
    std::lock_guard lock(mutex);
    return sent.size();
  }
  int history_calls_for(const std::string& channel_id) const {
    std::lock_guard lock(mutex);
    const auto it = history_calls.find(channel_id);
    return it == history_calls.end() ? 0 : it->second;
  }

  mutable std::mutex mutex;
  std::map<std::string, std::vector<platform::history_message>> history;
  std::set<std::string> skip_heartbeat;
  std::vector<std::pair<std::string, std::string>> sent;
  std::map<std::string, int> history_calls;
};

// The gateway's half for the Discord platform: its outbound consumer and dispatcher over
// the scripted adapter, on a thread of its own.
struct discord_gateway {
  explicit discord_gateway(const redis_server& redis) : settings(stargazer::redis::settings_from_url(redis.url())) {
    conn = std::make_unique<stargazer::redis::connection>(io.get_executor(), settings);
    bus = std::make_unique<bus::event_bus>(*conn, bus::event_bus_settings{});
    dispatch = std::make_unique<platform::outbound_dispatcher>(adapter);
    outbound = std::make_unique<bus::outbound_consumer>(*conn, settings, bus->names(), "test-gateway", *dispatch);
    conn->start();
    std::promise<void> ready;
    asio::co_spawn(io, [&]() -> asio::awaitable<void> {
      const std::vector<std::string> platforms{"discord"};
      co_await bus->ensure_streams(role::gateway, platforms);
      co_await outbound->start();
      ready.set_value();
    }, asio::detached);
    thread = std::thread([this] {
      auto guard = asio::make_work_guard(io);
      io.run();
    });
    ready.get_future().wait();
  }
  ~discord_gateway() {
    std::promise<void> stopped;
    asio::co_spawn(io, [&]() -> asio::awaitable<void> {
      co_await outbound->stop(500ms);
      conn->stop();
      stopped.set_value();
    }, asio::detached);
    stopped.get_future().wait();
    io.stop();
    thread.join();
  }

  scripted_discord adapter;
  asio::io_context io;
  stargazer::redis::connection_settings settings;
  std::unique_ptr<stargazer::redis::connection> conn;
  std::unique_ptr<bus::event_bus> bus;
  std::unique_ptr<platform::outbound_dispatcher> dispatch;
  std::unique_ptr<bus::outbound_consumer> outbound;
  std::thread thread;
};

// A clean stop: SIGTERM once the process is up (a signal before its handler is installed,
// early in a slow ASan start, ends it with 143), then exit status 0.
void stop(child_process& p) {
  poll_until([&] { return p.output().find("[service] ready") != std::string::npos; }, 30s);
  p.signal(SIGTERM);
  const auto status = p.wait(10s);
  INFO(p.output());
  CHECK(status == 0);
}

}  // namespace

TEST_CASE("group chat: a busy channel gets only the triage-approved replies, and keeps all 100 messages",
          "[group][process]") {
  redis_server redis;
  fake_llm_server llm({.route = [](std::string_view body, std::string_view last_user) -> std::optional<fake_reply> {
    if (!contains(body, worker::triage_prompt_opening)) return std::nullopt;  // replies: the echo fallback
    return fake_reply::reply(contains(last_user, "[ask]") ? "Yes." : "no");
  }});
  const auto health = free_port();
  child_process worker(worker_args(redis, llm, "w-1",
                                   {"--reply-policy=triage", "--unprompted-cooldown=0",
                                    "--health-port=" + std::to_string(health)}),
                       worker_env);
  bus_client bus(redis);

  std::string last;
  for (int i = 1; i <= 100; ++i) {
    auto e = bus.message("redis", "busy", "chatter " + std::to_string(i) + (i % 33 == 0 ? " [ask]" : ""), false);
    if (i == 1) e.response_nonce = "nonce-unanswered";
    last = bus.inject(e);
  }
  INFO(worker.output());
  REQUIRE(poll_until([&] { return bus.done(last); }, 120s));

  const auto replies = bus.replies("redis", "busy");
  CHECK(replies.size() == 3);  // messages 33, 66 and 99
  for (const auto& r : replies) CHECK(contains(r, "[ask]"));
  CHECK(redis.cli({"ZCARD", "channel_msgs:redis:busy"}) == "100");
  CHECK(count_kind(llm, worker::triage_prompt_opening) == 100);
  // An unanswered turn still completes: a wait=true caller gets complete with no responses.
  std::size_t completions = 0;
  for (const auto& e : bus.outbound("redis")) {
    if (e.response_nonce != "nonce-unanswered") continue;
    CHECK(e.type == bus::outbound_type::turn_complete);
    ++completions;
  }
  CHECK(completions == 1);
  const auto metrics = http_get(health, "/metrics").body;
  CHECK(contains(metrics, R"(stargazer_triage_decisions_total{decision="yes"} 3)"));
  CHECK(contains(metrics, R"(stargazer_triage_decisions_total{decision="no"} 97)"));

  // The model saw earlier chatter as context when it answered (unanswered messages are history).
  bool context_seen = false;
  for (const auto& r : llm.requests())
    if (!contains(r.body, worker::triage_prompt_opening) && contains(r.body, "chatter 98")) context_seen = true;
  CHECK(context_seen);

  // Addressed messages and direct messages are answered without triage.
  bus.turn(bus.message("redis", "busy", "Star, are you there?", true));
  auto dm = bus.message("redis", "dm-ada", "just between us", false);
  dm.is_dm = true;
  bus.turn(dm);
  CHECK(bus.replies("redis", "busy").size() == 4);
  CHECK(bus.replies("redis", "dm-ada").size() == 1);
  CHECK(count_kind(llm, worker::triage_prompt_opening) == 100);
  stop(worker);
}

TEST_CASE("group chat: after an unprompted reply the channel cools down, while addressed messages are still answered",
          "[group][process]") {
  redis_server redis;
  fake_llm_server llm({.route = [](std::string_view body, std::string_view) -> std::optional<fake_reply> {
    if (contains(body, worker::triage_prompt_opening)) return fake_reply::reply("yes");
    return std::nullopt;
  }});
  child_process worker(worker_args(redis, llm, "w-1", {"--unprompted-cooldown=3"}), worker_env);
  bus_client bus(redis);
  INFO(worker.output());

  bus.turn(bus.message("redis", "room", "anyone seen the comet?", false));
  CHECK(bus.replies("redis", "room").size() == 1);
  const auto ttl = std::stoi(redis.cli({"TTL", "sg:channel:redis:room:cooldown"}));
  CHECK(ttl > 0);
  CHECK(ttl <= 3);
  bus.turn(bus.message("redis", "room", "it was bright", false));
  bus.turn(bus.message("redis", "room", "so bright", false));
  CHECK(bus.replies("redis", "room").size() == 1);
  CHECK(count_kind(llm, worker::triage_prompt_opening) == 1);  // cooling down: not even asked
  bus.turn(bus.message("redis", "room", "Star, did you see it?", true));
  CHECK(bus.replies("redis", "room").size() == 2);
  // Another channel is not cooling down.
  bus.turn(bus.message("redis", "other", "comets anyone?", false));
  CHECK(bus.replies("redis", "other").size() == 1);

  REQUIRE(poll_until([&] { return redis.cli({"EXISTS", "sg:channel:redis:room:cooldown"}) == "0"; }, 6s));
  bus.turn(bus.message("redis", "room", "what a night", false));
  CHECK(bus.replies("redis", "room").size() == 3);
  CHECK(count_kind(llm, worker::triage_prompt_opening) == 3);
  stop(worker);
}

TEST_CASE("group chat: per-platform policies, and each command with and without privilege", "[group][process]") {
  redis_server redis;
  fake_llm_server llm({.route = [](std::string_view body, std::string_view) -> std::optional<fake_reply> {
    if (contains(body, worker::triage_prompt_opening)) return fake_reply::reply("yes");
    return std::nullopt;
  }});
  child_process worker(worker_args(redis, llm, "w-1",
                                   {"--reply-policy=addressed,webchat=always", "--unprompted-cooldown=0",
                                    "--admin-roles=role-42", "--webchat-admins=web-admin"}),
                       worker_env);
  bus_client bus(redis);
  INFO(worker.output());
  const auto admin = [&](bus::inbound_envelope e, std::vector<std::string> roles = {"admin"}) {
    e.member_roles = std::move(roles);
    return e;
  };
  const auto last_reply = [&](const std::string& platform, const std::string& channel) {
    const auto r = bus.replies(platform, channel);
    return r.empty() ? std::string() : r.back();
  };

  // Policies: redis stores unaddressed messages only, the web chat answers them all.
  bus.turn(bus.message("redis", "cmd", "just chatter", false));
  CHECK(bus.replies("redis", "cmd").empty());
  bus.turn(bus.message("webchat", "lobby", "hello room", false));
  CHECK(bus.replies("webchat", "lobby").size() == 1);
  CHECK(count_kind(llm, worker::triage_prompt_opening) == 0);
  const auto model_calls = llm.request_count();

  bus.turn(bus.message("redis", "cmd", "!help", false));
  CHECK(contains(last_reply("redis", "cmd"), "!forget"));
  CHECK(contains(last_reply("redis", "cmd"), "mode: addressed"));

  bus.turn(bus.message("redis", "cmd", "!mode always", false));
  CHECK(contains(last_reply("redis", "cmd"), "Sorry, only admins"));
  CHECK(redis.cli({"EXISTS", "sg:channel:redis:cmd:mode"}) == "0");
  bus.turn(admin(bus.message("redis", "cmd", "!mode always", false)));
  CHECK(contains(last_reply("redis", "cmd"), "Mode set to always"));
  CHECK(redis.cli({"GET", "sg:channel:redis:cmd:mode"}) == "always");
  bus.turn(admin(bus.message("redis", "cmd", "!mode loud", false)));
  CHECK(contains(last_reply("redis", "cmd"), "Usage: !mode"));
  CHECK(redis.cli({"GET", "sg:channel:redis:cmd:mode"}) == "always");
  bus.turn(bus.message("redis", "cmd", "!mode", false));  // anyone may ask
  CHECK(contains(last_reply("redis", "cmd"), "mode is always"));
  CHECK(llm.request_count() == model_calls);  // commands never reach the model

  // The channel's mode now answers unaddressed messages.
  auto replies = bus.replies("redis", "cmd").size();
  bus.turn(bus.message("redis", "cmd", "so what now", false));
  CHECK(bus.replies("redis", "cmd").size() == replies + 1);

  // A configured role id is privileged too.
  bus.turn(admin(bus.message("redis", "cmd", "!mode triage", false), {"role-7", "role-42"}));
  CHECK(redis.cli({"GET", "sg:channel:redis:cmd:mode"}) == "triage");

  // !quiet: refused without privilege; with it, no unprompted replies until it ends.
  bus.turn(bus.message("redis", "cmd", "!quiet 5", false));
  CHECK(contains(last_reply("redis", "cmd"), "Sorry, only admins"));
  CHECK(redis.cli({"EXISTS", "sg:channel:redis:cmd:quiet"}) == "0");
  bus.turn(admin(bus.message("redis", "cmd", "!quiet soon", false)));
  CHECK(contains(last_reply("redis", "cmd"), "Usage: !quiet"));
  bus.turn(admin(bus.message("redis", "cmd", "!quiet 5", false)));
  CHECK(contains(last_reply("redis", "cmd"), "5 minutes"));
  const auto quiet_ttl = std::stoi(redis.cli({"TTL", "sg:channel:redis:cmd:quiet"}));
  CHECK(quiet_ttl > 290);
  CHECK(quiet_ttl <= 300);
  const auto triage_calls = count_kind(llm, worker::triage_prompt_opening);
  replies = bus.replies("redis", "cmd").size();
  bus.turn(bus.message("redis", "cmd", "psst, anyone?", false));
  CHECK(bus.replies("redis", "cmd").size() == replies);
  CHECK(count_kind(llm, worker::triage_prompt_opening) == triage_calls);
  bus.turn(bus.message("redis", "cmd", "Star, are you awake?", true));  // addressed: answered in a quiet
  CHECK(bus.replies("redis", "cmd").size() == replies + 1);
  bus.turn(admin(bus.message("redis", "cmd", "!quiet 0", false)));
  CHECK(redis.cli({"EXISTS", "sg:channel:redis:cmd:quiet"}) == "0");

  // The web chat: configured role ids mean nothing there; listed users, and the admin
  // marker its gateway puts on an --admin invite's messages, do.
  bus.turn(admin(bus.message("webchat", "lobby", "!mode addressed", false), {"role-42"}));
  CHECK(contains(last_reply("webchat", "lobby"), "Sorry, only admins"));
  auto web_admin = bus.message("webchat", "lobby", "!mode addressed", false);
  web_admin.user_id = "web-admin";
  bus.turn(web_admin);
  CHECK(redis.cli({"GET", "sg:channel:webchat:lobby:mode"}) == "addressed");
  replies = bus.replies("webchat", "lobby").size();
  bus.turn(bus.message("webchat", "lobby", "talking to myself", false));
  CHECK(bus.replies("webchat", "lobby").size() == replies);

  // !forget: anyone; the model's history starts after it, the cache keeps everything.
  bus.turn(bus.message("redis", "mem", "remember the blue comet", true));
  bus.turn(bus.message("redis", "mem", "!forget", false));
  CHECK(contains(last_reply("redis", "mem"), "starts fresh"));
  CHECK(redis.cli({"EXISTS", "sg:channel:redis:mem:forgotten"}) == "1");
  bus.turn(bus.message("redis", "mem", "what did I ask you to remember?", true));
  const auto last_request = llm.requests().back().body;
  CHECK(contains(last_request, "what did I ask you to remember?"));
  CHECK_FALSE(contains(last_request, "blue comet"));
  CHECK(redis.cli({"ZCARD", "channel_msgs:redis:mem"}) == "3");
  stop(worker);
}

TEST_CASE("group chat: a new Discord channel is backfilled once from the gateway, and the model sees it",
          "[group][process]") {
  redis_server redis;
  discord_gateway gateway(redis);
  const double old = now_unix() - 3600;
  gateway.adapter.history["chan-old"] = {
      {"u-bob", "Bob", "we talked about comets last week", old, "h1", false, {}, {}},
      {"bot", "Star", "comets are mostly ice and dust", old + 10, "h2", true, {}, {}},
      {"u-bob", "Bob", "and their tails point away from the sun", old + 20, "h3", false, {}, {}}};
  gateway.adapter.history["chan-known"] = {{"u-bob", "Bob", "never fetched", old, "k0", false, {}, {}}};
  fake_llm_server llm;
  child_process a(worker_args(redis, llm, "w-a"), worker_env);
  child_process b(worker_args(redis, llm, "w-b"), worker_env);
  bus_client bus(redis);
  INFO(a.output());
  INFO(b.output());

  bus.turn(bus.message("discord", "chan-old", "Star, what did we say about comets?", true));
  REQUIRE(llm.request_count() == 1);
  const auto body = llm.requests()[0].body;
  CHECK(contains(body, "we talked about comets last week"));
  CHECK(contains(body, "comets are mostly ice and dust"));
  CHECK(contains(body, "Star, what did we say about comets?"));
  CHECK(gateway.adapter.history_calls_for("chan-old") == 1);
  CHECK(redis.cli({"ZCARD", "channel_msgs:discord:chan-old"}) == "4");
  const auto marker_ttl = std::stol(redis.cli({"TTL", "sg:channel:discord:chan-old:backfilled"}));
  CHECK(marker_ttl > 7 * 86400 - 60);
  CHECK(marker_ttl <= 7 * 86400);
  REQUIRE(poll_until([&] { return gateway.adapter.sent_to("chan-old").size() == 1; }, 10s));
  // The bot spoke there: the heartbeat will look in.
  CHECK_FALSE(redis.cli({"ZSCORE", "sg:heartbeat:channels", "discord:chan-old"}).empty());

  // More messages, on either worker: no second backfill.
  for (int i = 0; i < 4; ++i) bus.turn(bus.message("discord", "chan-old", "more " + std::to_string(i), true));
  CHECK(gateway.adapter.history_calls_for("chan-old") == 1);

  // A channel whose cache already holds messages is not backfilled.
  bus.store("discord", "chan-known", {"k1", "u-bob", "Bob", "already here", old, false, {}});
  bus.turn(bus.message("discord", "chan-known", "Star, hello", true));
  CHECK(gateway.adapter.history_calls_for("chan-known") == 0);

  // Never for the Redis platform or the web chat: no RPC at all.
  bus.turn(bus.message("redis", "fresh", "Star, hi", true));
  bus.turn(bus.message("webchat", "fresh-room", "Star, hi", true));
  for (const auto& platform : {"redis", "webchat"})
    for (const auto& e : bus.outbound(platform)) CHECK(e.type != bus::outbound_type::rpc_request);
  CHECK(redis.cli({"EXISTS", "sg:channel:redis:fresh:backfilled"}) == "0");
  stop(a);
  stop(b);
}

TEST_CASE("group chat: the heartbeat visits each quiet channel once across 3 workers, the leader killed mid-run",
          "[group][process][heartbeat]") {
  redis_server redis;
  discord_gateway gateway(redis);
  gateway.adapter.skip_heartbeat.insert("hb-skip");
  request_log heartbeats;
  fake_llm_server llm({.route = [&heartbeats](std::string_view body, std::string_view) -> std::optional<fake_reply> {
    if (!contains(body, worker::heartbeat_prompt_opening)) return std::nullopt;
    heartbeats.add(std::string(body));
    return fake_reply::reply("Clear skies tonight, anyone observing?").after(3000ms);
  }});
  bus_client bus(redis);
  const double now = now_unix();
  for (const std::string c : {"hb-a", "hb-b", "hb-c", "hb-skip", "hb-busy"}) {
    redis.cli({"ZADD", "sg:heartbeat:channels", std::to_string(now - 60), "discord:" + c});
    const bool busy = c == "hb-busy";
    bus.store("discord", c, {"old-" + c, "u-bob", "Bob", "old talk in " + c, busy ? now : now - 7200, false, {}});
  }
  const std::vector<std::string> hb_flags{"--heartbeat-initial-delay=1", "--heartbeat-interval=3600",
                                          "--heartbeat-quiet=600"};
  std::map<std::string, std::unique_ptr<child_process>> workers;
  for (const std::string node : {"w-1", "w-2", "w-3"})
    workers[node] = std::make_unique<child_process>(worker_args(redis, llm, node, hb_flags), worker_env);

  // The leader's first visit is under way: kill it while the model thinks.
  REQUIRE(poll_until([&] { return heartbeats.size() == 1; }, 30s));
  const auto leader = redis.cli({"GET", "sg:leader:heartbeat"});
  REQUIRE(workers.contains(leader));
  const auto first = heartbeats.all()[0];
  std::string interrupted;
  for (const std::string c : {"hb-a", "hb-b", "hb-c"})
    if (contains(first, "old talk in " + c)) interrupted = c;
  REQUIRE_FALSE(interrupted.empty());
  workers[leader]->signal(SIGKILL);
  REQUIRE(workers[leader]->wait(5s));
  // Its lease would expire within a minute; let it expire now.
  redis.cli({"PEXPIRE", "sg:leader:heartbeat", "1"});

  // Another worker takes over and finishes the round, without the interrupted channel.
  INFO("interrupted: " << interrupted);
  REQUIRE(poll_until([&] { return gateway.adapter.sent_count() == 2; }, 30s));
  REQUIRE(poll_until([&] { return !redis.cli({"HGET", "sg:heartbeat:round", "finished"}).empty(); }, 15s));
  const auto successor = redis.cli({"GET", "sg:leader:heartbeat"});
  CHECK(successor != leader);
  CHECK(heartbeats.size() == 3);
  for (const std::string c : {"hb-a", "hb-b", "hb-c"}) {
    INFO(c);
    CHECK(redis.cli({"EXISTS", "sg:heartbeat:last:discord:" + c}) == "1");
    CHECK(gateway.adapter.sent_to(c).size() == (c == interrupted ? 0u : 1u));
  }
  // Skipped: by the gateway's adapter, and for a recent message.
  CHECK(redis.cli({"EXISTS", "sg:heartbeat:last:discord:hb-skip"}) == "0");
  CHECK(redis.cli({"EXISTS", "sg:heartbeat:last:discord:hb-busy"}) == "0");
  for (const auto& body : heartbeats.all()) {
    CHECK_FALSE(contains(body, "old talk in hb-skip"));
    CHECK_FALSE(contains(body, "old talk in hb-busy"));
  }

  // Nothing more within the interval.
  std::this_thread::sleep_for(4s);
  CHECK(heartbeats.size() == 3);
  CHECK(gateway.adapter.sent_count() == 2);
  for (auto& [node, process] : workers)
    if (node != leader) stop(*process);
}

TEST_CASE("group chat: presence is the model's <dstatus> line, or the configured text when it writes none",
          "[group][process][presence]") {
  redis_server redis;
  std::atomic<int> status_mode{0};  // 0: a tag, 1: no tag, 2: an error
  fake_llm_server llm({.route = [&status_mode](std::string_view body, std::string_view) -> std::optional<fake_reply> {
    if (!contains(body, worker::status_prompt_opening)) return std::nullopt;
    switch (status_mode.load()) {
      case 0: return fake_reply::reply("Sure! <dstatus>🔭 watching the sky</dstatus>");
      case 1: return fake_reply::reply("I am feeling great today");
      default: return fake_reply::error(500);
    }
  }});
  const std::vector<std::string> flags{"--presence-interval=0.3", "--bot-name=Nova",
                                       "--presence-text=Resting, as {bot_name}"};
  child_process worker(worker_args(redis, llm, "w-1", flags), worker_env);
  bus_client bus(redis);
  INFO(worker.output());
  const auto presence_seen = [&](const std::string& text, const std::string& emoji) {
    for (const auto& e : bus.outbound("redis"))
      if (e.type == bus::outbound_type::presence && e.text == text && e.emoji == emoji) return true;
    return false;
  };
  if (!poll_until([&] { return presence_seen("watching the sky", "🔭"); }, 20s)) FAIL(worker.output());
  // Every platform's gateways get it.
  bool on_webchat = false;
  for (const auto& e : bus.outbound("webchat"))
    on_webchat = on_webchat || (e.type == bus::outbound_type::presence && e.text == "watching the sky");
  CHECK(on_webchat);

  status_mode = 1;
  REQUIRE(poll_until([&] { return presence_seen("Resting, as Nova", "💬"); }, 20s));
  redis.cli({"DEL", "sg:stream:outbound:redis"});
  status_mode = 2;
  REQUIRE(poll_until([&] { return presence_seen("Resting, as Nova", "💬"); }, 20s));
  stop(worker);
}

TEST_CASE("group chat: a linked person is named with their other accounts, and the message's extra reaches the prompt",
          "[group][process][identity]") {
  redis_server redis;
  fake_llm_server llm;
  // `stargazer identity link redis:u-ada webchat:ada-01 --id p-ada7`, as the link script stores it.
  redis.cli({"SET", "sg:identity:user:redis:u-ada", "p-ada7"});
  redis.cli({"SET", "sg:identity:user:webchat:ada-01", "p-ada7"});
  redis.cli({"SADD", "sg:identity:unified:p-ada7", "redis:u-ada", "webchat:ada-01"});
  child_process worker(worker_args(redis, llm, "w-1"), worker_env);
  bus_client bus(redis);

  auto e = bus.message("redis", "desk", "Star, where is my order?", true);
  e.extra = {{"order", "A-42"}, {"tier", "gold"}};
  bus.turn(e);
  REQUIRE(llm.request_count() == 1);
  const auto body = llm.requests()[0].body;
  INFO(body);
  CHECK(contains(body, "Ada (person p-ada7, also webchat:ada-01)"));
  CHECK(contains(body, "order: A-42; tier: gold"));

  // Someone not linked is named as they are, and a message without extra has no extra line.
  auto other = bus.message("redis", "desk", "Star, hello", true);
  other.user_id = "u-bob";
  other.username = "Bob";
  bus.turn(other);
  REQUIRE(llm.request_count() == 2);
  const auto second = llm.requests()[1].body;
  CHECK_FALSE(contains(second, "(person "));
  CHECK_FALSE(contains(second, "Details the sender attached"));
  stop(worker);
}
