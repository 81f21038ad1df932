// Quotas and usage accounting against a real redis-server: the token bucket script shared by
// connections, the REST API's 429, the worker's one polite notice, the usage counters the
// turns write, the usage route and `stargazer usage`.

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/rpc_client.hpp"
#include "stargazer/bus/stream_entry.hpp"
#include "stargazer/core/error.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/core/strings.hpp"
#include "stargazer/llm/openai_client.hpp"
#include "stargazer/platform/message_cache.hpp"
#include "stargazer/platform/quota.hpp"
#include "stargazer/worker/message_processor.hpp"
#include "stargazer/worker/proxy_adapter.hpp"

#include "api_client.hpp"
#include "child_process.hpp"
#include "fake_llm_server.hpp"
#include "gateway_fixture.hpp"
#include "redis_server.hpp"
#include "run_coro.hpp"

#include <catch2/catch.hpp>
#include <rapidjson/document.h>

#include <charconv>
#include <thread>

using namespace stargazer;
using namespace stargazer::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

std::string today() { return platform::format_day(platform::utc_day_of(std::chrono::system_clock::now())); }

// The value of the one series of `metrics` whose line starts with `series` ("name{labels}").
std::uint64_t metric_value(const metrics::registry& metrics, const std::string& series) {
  const auto text = metrics.render();
  const auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return 0;
  const auto start = at + 1 + series.size() + 1;
  std::uint64_t v = 0;
  std::from_chars(text.data() + start, text.data() + text.size(), v);
  return v;
}

platform::quota_decision admit(asio::io_context& io, platform::quotas& q, const platform::quota_settings& limits,
                               const platform::quota_subject& who, bool notice = false) {
  auto r = run_coro(io, q.admit(limits, who, notice));
  REQUIRE(r);
  return *r;
}

// Commands the server has run of one kind (INFO commandstats, commands run by scripts
// included), 0 when none.
long long commands_run(const redis_server& redis, const std::string& name) {
  const auto stats = redis.cli({"INFO", "commandstats"});
  const std::string field = "cmdstat_" + name + ":calls=";
  const auto at = stats.find(field);
  if (at == std::string::npos) return 0;
  return std::stoll(stats.substr(at + field.size()));
}

// The quota script is the only caller of TIME: its count says whether a check ran.
long long quota_checks(const redis_server& redis) { return commands_run(redis, "time"); }

}  // namespace

TEST_CASE("the token bucket admits N turns, then refuses with a retry-after, refills, and is shared by connections",
          "[quota]") {
  redis_server server;
  asio::io_context io;
  metrics::registry metrics;
  const auto settings = redis::settings_from_url(server.url());
  redis::connection a(io.get_executor(), settings), b(io.get_executor(), settings);
  a.start();
  b.start();
  platform::quotas on_a(a, &metrics), on_b(b, &metrics);  // two processes' views of one Redis
  platform::quota_settings limits;
  limits.per_user = platform::rate{3, 1500ms};  // a token every 500 ms
  const platform::quota_subject ada{"webchat", "lobby", "ada"};

  CHECK(admit(io, on_a, limits, ada).admitted);
  CHECK(admit(io, on_b, limits, ada).admitted);
  CHECK(admit(io, on_a, limits, ada).admitted);
  const auto refused = admit(io, on_b, limits, ada);
  CHECK_FALSE(refused.admitted);
  CHECK(refused.limit == platform::quota_limit::rate_user);
  CHECK(refused.retry_after > 0ms);
  CHECK(refused.retry_after <= 500ms);
  CHECK_FALSE(refused.notify);  // not asked for
  CHECK(metric_value(metrics, R"(stargazer_rate_limited_total{limit="rate-user"})") == 1);

  // Someone else has a bucket of their own.
  CHECK(admit(io, on_a, limits, platform::quota_subject{"webchat", "lobby", "bob"}).admitted);
  // The bucket expires once it would be full again.
  const auto ttl = std::stoll(server.cli({"PTTL", "sg:quota:rate-user:webchat:ada"}));
  CHECK(ttl > 0);
  CHECK(ttl <= 1500);

  // One token is back after the retry-after; the next is not.
  run_coro(io, sleep_for(refused.retry_after + 20ms));
  CHECK(admit(io, on_b, limits, ada).admitted);
  CHECK_FALSE(admit(io, on_a, limits, ada).admitted);
  // A full period later the whole burst is back.
  run_coro(io, sleep_for(1550ms));
  for (int i = 0; i < 3; ++i) CHECK(admit(io, on_a, limits, ada).admitted);
  CHECK_FALSE(admit(io, on_a, limits, ada).admitted);
  a.stop();
  b.stop();
}

TEST_CASE("a refusal by one limit takes no token from another, and the notice mark is set once per window", "[quota]") {
  redis_server server;
  asio::io_context io;
  redis::connection conn(io.get_executor(), redis::settings_from_url(server.url()));
  conn.start();
  platform::quotas q(conn);
  platform::quota_settings limits;
  limits.per_user = platform::rate{5, 60s};
  limits.per_instance = platform::rate{1, 60s};
  const platform::quota_subject ada{"discord", "chan-1", "ada"};

  CHECK(admit(io, q, limits, ada, true).admitted);
  const auto first = admit(io, q, limits, ada, true);
  CHECK_FALSE(first.admitted);
  CHECK(first.limit == platform::quota_limit::rate_instance);
  CHECK(first.retry_after > 59s);
  CHECK(first.retry_after <= 60s);
  CHECK(first.notify);  // the first refusal of the window
  const auto second = admit(io, q, limits, ada, true);
  CHECK_FALSE(second.admitted);
  CHECK_FALSE(second.notify);  // told already
  const auto mark_ttl = std::stoll(server.cli({"PTTL", "sg:quota:notice:rate-instance:discord:chan-1"}));
  CHECK(mark_ttl > 59000);
  CHECK(mark_ttl <= 60000);
  // Ada's own bucket lost only the admitted turn's token.
  const auto tokens = std::stod(server.cli({"HGET", "sg:quota:rate-user:discord:ada", "tokens"}));
  CHECK(tokens > 3.99);
  CHECK(tokens < 4.01);
  conn.stop();
}

TEST_CASE("the daily token budget reads today's usage, and with every limit off no command is sent", "[quota]") {
  redis_server server;
  asio::io_context io;
  redis::connection conn(io.get_executor(), redis::settings_from_url(server.url()));
  conn.start();
  platform::quotas q(conn);
  const platform::quota_subject who{"redis", "inst-1", "u1"};

  const auto evals_before = commands_run(server, "evalsha") + commands_run(server, "eval");
  CHECK(admit(io, q, platform::quota_settings{}, who, true).admitted);
  CHECK(commands_run(server, "evalsha") + commands_run(server, "eval") == evals_before);
  CHECK(quota_checks(server) == 0);
  CHECK(server.cli({"DBSIZE"}) == "0");

  // Two turns of usage today: 100 tokens.
  CHECK_FALSE(run_coro(io, q.record("redis", "inst-1", platform::token_usage{50, 10})));
  CHECK_FALSE(run_coro(io, q.record("redis", "inst-1", platform::token_usage{30, 10})));
  const auto key = "sg:usage:redis:inst-1:" + today();
  CHECK(server.cli({"HGET", key, "prompt_tokens"}) == "80");
  CHECK(server.cli({"HGET", key, "completion_tokens"}) == "20");
  CHECK(server.cli({"HGET", key, "turns"}) == "2");
  const auto ttl = std::stoll(server.cli({"TTL", key}));
  CHECK(ttl > 90 * 86400 - 60);
  CHECK(ttl <= 90 * 86400);

  platform::quota_settings limits;
  limits.daily_tokens_per_instance = 101;
  CHECK(admit(io, q, limits, who).admitted);
  limits.daily_tokens_per_instance = 100;
  const auto spent = admit(io, q, limits, who, true);
  CHECK_FALSE(spent.admitted);
  CHECK(spent.limit == platform::quota_limit::budget_instance_tokens);
  CHECK(spent.retry_after > 0ms);
  CHECK(spent.retry_after <= 24h);
  CHECK(spent.notify);
  // Another instance has its own budget.
  CHECK(admit(io, q, limits, platform::quota_subject{"redis", "inst-2", "u1"}).admitted);

  auto days = run_coro(io, platform::read_usage(conn, "redis", "inst-1", platform::utc_day_of(std::chrono::system_clock::now()) - std::chrono::days(3),
                                                platform::utc_day_of(std::chrono::system_clock::now())));
  REQUIRE(days);
  REQUIRE(days->size() == 1);  // only days with usage
  CHECK((*days)[0].day == today());
  CHECK((*days)[0].prompt_tokens == 80);
  CHECK((*days)[0].completion_tokens == 20);
  CHECK((*days)[0].turns == 2);
  conn.stop();
}

TEST_CASE("batched usage: turns are summed in memory and written by one flush, kept while Redis is away, and a "
          "budget's turn is written at once",
          "[quota]") {
  redis_server server;
  asio::io_context io;
  auto settings = redis::settings_from_url(server.url());
  settings.command_timeout = 500ms;
  redis::connection conn(io.get_executor(), settings);
  conn.start();
  REQUIRE(run_coro(io, conn.command("PING")));  // connected: a flush needs that, it never queues
  platform::quotas q(conn);
  q.batch_usage(true);
  const auto key = [](const std::string& channel) { return "sg:usage:redis:" + channel + ":" + today(); };

  for (int i = 0; i < 5; ++i) CHECK_FALSE(run_coro(io, q.record("redis", "inst-1", platform::token_usage{10, 2})));
  CHECK_FALSE(run_coro(io, q.record("redis", "inst-2", platform::token_usage{7, 1})));
  CHECK(server.cli({"DBSIZE"}) == "0");  // nothing sent yet
  const auto increments_before = commands_run(server, "hincrby");
  CHECK_FALSE(run_coro(io, q.flush_usage()));
  CHECK(commands_run(server, "hincrby") - increments_before == 6);  // three per channel, not per turn
  CHECK(server.cli({"HGET", key("inst-1"), "prompt_tokens"}) == "50");
  CHECK(server.cli({"HGET", key("inst-1"), "completion_tokens"}) == "10");
  CHECK(server.cli({"HGET", key("inst-1"), "turns"}) == "5");
  CHECK(server.cli({"HGET", key("inst-2"), "turns"}) == "1");
  CHECK(std::stoll(server.cli({"TTL", key("inst-2")})) > 90 * 86400 - 60);
  CHECK_FALSE(run_coro(io, q.flush_usage()));  // nothing pending: nothing added twice
  CHECK(server.cli({"HGET", key("inst-1"), "turns"}) == "5");

  // A turn a budget governs is counted before the next turn's check.
  CHECK_FALSE(run_coro(io, q.record("redis", "inst-3", platform::token_usage{1, 1}, true)));
  CHECK(server.cli({"HGET", key("inst-3"), "turns"}) == "1");

  // Redis away: the flush fails and keeps the sums; the next one writes them.
  CHECK_FALSE(run_coro(io, q.record("redis", "inst-1", platform::token_usage{1, 1})));
  server.stop();
  // The connection notices the loss (a command fails); a flush then finds it down.
  for (int attempt = 0; attempt < 50 && conn.stats().connected; ++attempt)
    (void)run_coro(io, conn.command("PING"));
  REQUIRE_FALSE(conn.stats().connected);
  CHECK(run_coro(io, q.flush_usage()) == make_error_code(errc::not_connected));
  CHECK_FALSE(run_coro(io, q.record("redis", "inst-1", platform::token_usage{1, 1})));
  server.start();
  for (int attempt = 0; attempt < 50 && !conn.stats().connected; ++attempt)
    (void)run_coro(io, conn.command("PING"));  // waits for the reconnect
  CHECK_FALSE(run_coro(io, q.flush_usage()));
  // (The restarted server kept nothing: no persistence.) Both turns of the outage are there.
  CHECK(server.cli({"HGET", key("inst-1"), "turns"}) == "2");
  CHECK(server.cli({"HGET", key("inst-1"), "prompt_tokens"}) == "2");
  conn.stop();
}

TEST_CASE("REST: over the instance rate a message gets 429 with Retry-After and a JSON error naming the limit, "
          "and is kept in the history",
          "[quota][api]") {
  gateway_fixture g;
  platform::quotas quotas(*g.conn, &g.metrics);
  platform::quota_settings limits;
  limits.per_instance = platform::rate{2, 60s};
  g.on_io([&] { g.platform->set_quotas(&quotas, limits); });
  auto inst = create_instance(g);
  const auto messages = "/redis-platform/instances/" + inst.id + "/messages";

  for (int i = 1; i <= 2; ++i) {
    auto ok = call(g.port(), "POST", messages + "?wait=true&timeout=10", bearer(inst.key),
                   R"({"text":"hello )" + std::to_string(i) + R"(","user_id":"u1","user_name":"Ada"})");
    INFO(ok.raw);
    CHECK(ok.status == 200);
  }
  auto held = call(g.port(), "POST", messages + "?wait=true&timeout=10", bearer(inst.key),
                   R"({"text":"one too many","user_id":"u1","user_name":"Ada"})");
  INFO(held.raw);
  REQUIRE(held.status == 429);
  const auto headers = ascii_lower(held.headers);
  const auto retry_at = headers.find("retry-after: ");
  REQUIRE(retry_at != std::string::npos);
  const auto retry_after = std::stoi(headers.substr(retry_at + 13));
  CHECK(retry_after >= 1);
  CHECK(retry_after <= 30);  // one of two turns per minute comes back within 30 s
  auto d = json_of(held);
  CHECK(std::string(d["error"]["code"].GetString()) == "rate_limited");
  CHECK(std::string(d["error"]["limit"].GetString()) == "rate-instance");
  CHECK(d["error"]["retry_after"].GetInt() == retry_after);
  CHECK(std::string(d["error"]["message"].GetString()).find("kept in the history") != std::string::npos);

  // Nothing is lost: the message is in the history, though no worker was asked to answer it.
  auto history = json_of(call(g.port(), "GET", messages + "?limit=20", bearer(inst.key)));
  bool kept = false;
  for (const auto& m : history["messages"].GetArray())
    kept = kept || std::string(m["text"].GetString()) == "one too many";
  CHECK(kept);
  CHECK(g.redis.cli({"XLEN", "sg:stream:inbound"}) == "2");
  CHECK(metric_value(g.metrics, R"(stargazer_rate_limited_total{limit="rate-instance"})") == 1);

  // Another instance is not affected.
  auto other = create_instance(g);
  auto fine = call(g.port(), "POST", "/redis-platform/instances/" + other.id + "/messages", bearer(other.key),
                   R"({"text":"hi","user_id":"u1","user_name":"Ada"})");
  CHECK(fine.status == 202);
  g.on_io([&] { g.platform->set_quotas(nullptr, {}); });
}

TEST_CASE("REST: the per-user rate counts each instance's users apart", "[quota][api]") {
  gateway_fixture g(false);
  platform::quotas quotas(*g.conn, &g.metrics);
  platform::quota_settings limits;
  limits.per_user = platform::rate{1, 60s};
  g.on_io([&] { g.platform->set_quotas(&quotas, limits); });
  auto one = create_instance(g), two = create_instance(g);
  const auto post = [&](const created_instance& inst, const std::string& user) {
    return call(g.port(), "POST", "/redis-platform/instances/" + inst.id + "/messages", bearer(inst.key),
                R"({"text":"hi","user_id":")" + user + R"(","user_name":"Someone"})")
        .status;
  };
  CHECK(post(one, "u1") == 202);
  CHECK(post(one, "u1") == 429);
  CHECK(post(one, "u2") == 202);
  CHECK(post(two, "u1") == 202);  // the same id on another instance is another user
  auto held = call(g.port(), "POST", "/redis-platform/instances/" + one.id + "/messages", bearer(one.key),
                   R"({"text":"hi","user_id":"u1","user_name":"Someone"})");
  CHECK(std::string(json_of(held)["error"]["limit"].GetString()) == "rate-user");
  g.on_io([&] { g.platform->set_quotas(nullptr, {}); });
}

namespace {

// The message processor of a worker, talking to the OpenAI-compatible test server, with the
// quotas and usage accounting on one Redis connection.
struct worker_fixture {
  explicit worker_fixture(const std::string& redis_url = {}) {
    settings = redis::settings_from_url(redis_url.empty() ? server.url() : redis_url);
    conn = std::make_unique<redis::connection>(io.get_executor(), settings);
    bus = std::make_unique<bus::event_bus>(*conn, bus::event_bus_settings{});
    rpc = std::make_unique<bus::rpc_client>(*bus, settings, 300ms);
    cache = std::make_unique<platform::message_cache>(*conn);
    quotas = std::make_unique<platform::quotas>(*conn, &metrics);
    conn->start();
    llm::openai_settings s;
    s.base_url = llm_server.base_url();
    s.api_key = "test-key";
    s.max_retries = 0;
    s.timeout = 5s;
    model = std::make_shared<llm::openai_client>(io.get_executor(), s, &metrics);
  }
  ~worker_fixture() { conn->stop(); }

  worker::message_processor processor(worker::processor_settings s) {
    return worker::message_processor(*cache, model, std::move(s), nullptr, &metrics, nullptr, quotas.get());
  }

  bus::outcome turn(worker::message_processor& p, const std::string& platform, const std::string& channel,
                    const std::string& user, const std::string& text, bool addressed = true) {
    bus::turn t;
    t.entry_id = std::to_string(++turns) + "-0";
    t.message.platform = platform;
    t.message.channel_id = channel;
    t.message.user_id = user;
    t.message.username = user;
    t.message.content = text;
    t.message.is_addressed = addressed;
    t.message.message_id = "m" + std::to_string(turns);
    t.message.timestamp = 1700000000 + turns;
    t.message.trace_id = "trace-" + std::to_string(turns);
    return run_coro(io, [&]() -> asio::awaitable<bus::outcome> {
      worker::proxy_adapter adapter(*bus, *rpc, platform, {"star", "Star"}, &t);
      const auto m = worker::incoming_message_from(t.message);
      co_return co_await p.handle(m, adapter);
    }(), 20s);
  }

  // The texts of the message envelopes on a platform's outbound stream.
  std::vector<std::string> replies(const std::string& platform) {
    auto range = run_coro(io, [&]() -> asio::awaitable<result<redis::reply>> {
      co_return co_await conn->command("XRANGE", "sg:stream:outbound:" + platform, "-", "+");
    }());
    std::vector<std::string> out;
    for (const auto& e : bus::parse_entries(*range)) {
      auto d = bus::decode_outbound(e.field("data"));
      if (auto* env = std::get_if<bus::outbound_envelope>(&d); env && env->type == bus::outbound_type::message)
        out.push_back(env->text);
    }
    return out;
  }

  std::string cli(const std::vector<std::string>& args) {
    auto r = run_coro(io, [&]() -> asio::awaitable<result<redis::reply>> {
      redis::request req;
      req.push_range(args);
      co_return co_await conn->exec_one(std::move(req));
    }());
    REQUIRE(r);
    if (r->is_integer()) return std::to_string(r->integer());
    return r->str();
  }

  redis_server server;
  fake_llm_server llm_server;
  asio::io_context io;
  metrics::registry metrics;
  redis::connection_settings settings;
  std::unique_ptr<redis::connection> conn;
  std::unique_ptr<bus::event_bus> bus;
  std::unique_ptr<bus::rpc_client> rpc;
  std::unique_ptr<platform::message_cache> cache;
  std::unique_ptr<platform::quotas> quotas;
  std::shared_ptr<llm::client> model;
  int turns = 0;
};

}  // namespace

TEST_CASE("worker: over the user rate an addressed message gets one polite notice, then silence, and the model is not "
          "called and every message is stored",
          "[quota][worker]") {
  worker_fixture f;
  worker::processor_settings s;
  s.quotas.per_user = platform::rate{2, 60s};
  auto p = f.processor(s);
  for (const auto* reply : {"first", "second", "for bob"}) f.llm_server.push(fake_reply::reply(reply));

  CHECK(f.turn(p, "webchat", "lobby", "ada", "one").what == bus::outcome::kind::ack);
  CHECK(f.turn(p, "webchat", "lobby", "ada", "two").what == bus::outcome::kind::ack);
  CHECK(f.llm_server.request_count() == 2);
  CHECK(f.turn(p, "webchat", "lobby", "ada", "three").what == bus::outcome::kind::ack);
  CHECK(f.turn(p, "webchat", "lobby", "ada", "four").what == bus::outcome::kind::ack);
  CHECK(f.turn(p, "webchat", "lobby", "ada", "five, unaddressed", false).what == bus::outcome::kind::ack);
  CHECK(f.llm_server.request_count() == 2);  // held back before the model
  // Bob is not held back by Ada's rate.
  CHECK(f.turn(p, "webchat", "lobby", "bob", "hello").what == bus::outcome::kind::ack);
  CHECK(f.llm_server.request_count() == 3);

  const auto replies = f.replies("webchat");
  REQUIRE(replies.size() == 4);
  CHECK(replies[0] == "first");
  CHECK(replies[1] == "second");
  // A token comes back every 30 s: the notice says so (in whole seconds, rounded up).
  const auto notice = worker::quota_notice_text(platform::quota_limit::rate_user, 30s);
  CHECK(replies[2].substr(0, 40) == notice.substr(0, 40));
  const bool says_when = replies[2].find("about 30 seconds") != std::string::npos ||
                         replies[2].find("about 29 seconds") != std::string::npos;
  CHECK(says_when);
  CHECK(replies[3] == "for bob");
  // Nothing is lost: every message is in the channel's history.
  CHECK(f.cli({"ZCARD", "channel_msgs:webchat:lobby"}) == "6");
  CHECK(f.cli({"HGET", "sg:msg:webchat:lobby:m4", "text"}) == "four");
  CHECK(metric_value(f.metrics, R"(stargazer_turns_total{outcome="rate_limited"})") == 2);
  CHECK(metric_value(f.metrics, R"(stargazer_rate_limited_total{limit="rate-user"})") == 2);
}

TEST_CASE("worker: a spent token budget holds turns back with one notice a day, and usage matches the model's",
          "[quota][worker]") {
  worker_fixture f;
  worker::processor_settings s;
  s.quotas.daily_tokens_per_instance = 1;  // the first turn spends it
  auto p = f.processor(s);
  f.llm_server.push(fake_reply::reply("one two three"));
  CHECK(f.turn(p, "discord", "chan-9", "ada", "hello there").what == bus::outcome::kind::ack);
  CHECK(f.turn(p, "discord", "chan-9", "bob", "anyone?").what == bus::outcome::kind::ack);
  CHECK(f.turn(p, "discord", "chan-9", "ada", "still there?").what == bus::outcome::kind::ack);
  CHECK(f.llm_server.request_count() == 1);
  const auto replies = f.replies("discord");
  REQUIRE(replies.size() == 2);
  CHECK(replies[1].find("budget") != std::string::npos);

  // The one turn's usage, as the API reported it.
  const auto key = "sg:usage:discord:chan-9:" + today();
  const auto prompt = metric_value(f.metrics, R"(stargazer_llm_tokens_total{provider="openai",kind="prompt"})");
  CHECK(prompt > 0);
  CHECK(f.cli({"HGET", key, "prompt_tokens"}) == std::to_string(prompt));
  CHECK(f.cli({"HGET", key, "completion_tokens"}) == "3");
  CHECK(f.cli({"HGET", key, "turns"}) == "1");
}

TEST_CASE("worker: Redis-platform turns are left to the gateway's check, and with limits off no quota check runs",
          "[quota][worker]") {
  worker_fixture f;
  worker::processor_settings s;
  s.quotas.per_user = platform::rate{1, 60s};
  auto p = f.processor(s);
  for (int i = 0; i < 3; ++i) CHECK(f.turn(p, "redis", "inst-1", "u1", "hi").what == bus::outcome::kind::ack);
  CHECK(f.llm_server.request_count() == 3);
  CHECK(f.cli({"EXISTS", "sg:quota:rate-user:redis:inst-1:u1"}) == "0");

  CHECK(quota_checks(f.server) == 0);

  auto off = f.processor(worker::processor_settings{});
  CHECK(f.turn(off, "webchat", "lobby", "ada", "hi").what == bus::outcome::kind::ack);
  CHECK(quota_checks(f.server) == 0);
  CHECK(f.cli({"HGET", "sg:usage:webchat:lobby:" + today(), "turns"}) == "1");  // usage is always kept
}

TEST_CASE("usage route: tokens per day as the turns recorded them, and bad dates and ranges are 400 naming the "
          "parameter",
          "[quota][api]") {
  gateway_fixture g(false);
  auto inst = create_instance(g);
  {
    worker_fixture w(g.redis.url());  // a worker on the gateway's Redis
    auto p = w.processor(worker::processor_settings{});
    w.llm_server.push(fake_reply::reply("alpha beta"));
    w.llm_server.push(fake_reply::reply("gamma delta epsilon"));
    CHECK(w.turn(p, "redis", inst.id, "u1", "first question").what == bus::outcome::kind::ack);
    CHECK(w.turn(p, "redis", inst.id, "u1", "second question").what == bus::outcome::kind::ack);
    const auto prompt = metric_value(w.metrics, R"(stargazer_llm_tokens_total{provider="openai",kind="prompt"})");
    REQUIRE(prompt > 0);

    const auto base = "/redis-platform/instances/" + inst.id + "/usage";
    auto r = call(g.port(), "GET", base, bearer(inst.key));
    INFO(r.raw);
    REQUIRE(r.status == 200);
    auto d = json_of(r);
    CHECK(std::string(d["instance_id"].GetString()) == inst.id);
    CHECK(std::string(d["to"].GetString()) == today());
    REQUIRE(d["days"].Size() == 1);
    const auto& day = d["days"][0];
    CHECK(std::string(day["date"].GetString()) == today());
    CHECK(day["prompt_tokens"].GetUint64() == prompt);
    CHECK(day["completion_tokens"].GetInt() == 5);
    CHECK(day["total_tokens"].GetUint64() == prompt + 5);
    CHECK(day["turns"].GetInt() == 2);
    CHECK(d["total"]["turns"].GetInt() == 2);
    // The admin key reads it too; an explicit range without today is empty.
    auto admin_read = call(g.port(), "GET", base + "?from=" + today() + "&to=" + today(), admin);
    CHECK(json_of(admin_read)["days"].Size() == 1);
    auto long_ago = call(g.port(), "GET", base + "?from=2020-01-01&to=2020-01-31", admin);
    CHECK(long_ago.status == 200);
    CHECK(json_of(long_ago)["days"].Size() == 0);
  }

  const auto base = "/redis-platform/instances/" + inst.id + "/usage";
  const struct {
    std::string query;
    const char* code;
  } bad[] = {{"?from=2025-02-30", "bad_from"},
             {"?to=yesterday", "bad_to"},
             {"?from=2025-03-01&to=2025-02-01", "bad_from"},
             {"?from=2024-01-01&to=2025-01-01", "bad_range"}};
  for (const auto& b : bad) {
    auto r = call(g.port(), "GET", base + b.query, bearer(inst.key));
    INFO(b.query << ": " << r.raw);
    CHECK(r.status == 400);
    CHECK(std::string(json_of(r)["error"]["code"].GetString()) == b.code);
  }
  CHECK(call(g.port(), "GET", base, "").status == 401);
  auto other = create_instance(g);
  CHECK(call(g.port(), "GET", base, bearer(other.key)).status == 403);
}

TEST_CASE("stargazer usage --json prints every channel's days and totals, and --instance one instance's", "[quota][cli]") {
  redis_server server;
  const auto day = today();
  server.cli({"HSET", "sg:usage:redis:inst-1:" + day, "prompt_tokens", "100", "completion_tokens", "20", "turns", "3"});
  server.cli({"HSET", "sg:usage:redis:inst-1:2020-01-01", "prompt_tokens", "7", "completion_tokens", "1", "turns", "1"});
  server.cli({"HSET", "sg:usage:matrix:!room:example.org:" + day, "prompt_tokens", "10", "completion_tokens", "5",
              "turns", "1"});

  auto [status, out] = run_process({STARGAZER_BINARY, "usage", "--json", "--redis-url", server.url()});
  INFO(out);
  REQUIRE(status == 0);
  rapidjson::Document d;
  d.Parse(out.c_str(), out.size());
  REQUIRE_FALSE(d.HasParseError());
  CHECK(std::string(d["to"].GetString()) == day);
  REQUIRE(d["channels"].Size() == 2);  // the 2020 day is outside the last 30 days
  CHECK(std::string(d["channels"][0]["platform"].GetString()) == "matrix");
  CHECK(std::string(d["channels"][0]["channel_id"].GetString()) == "!room:example.org");
  CHECK(std::string(d["channels"][1]["channel_id"].GetString()) == "inst-1");
  CHECK(d["channels"][1]["days"][0]["total_tokens"].GetInt() == 120);
  CHECK(d["total"]["prompt_tokens"].GetInt() == 110);
  CHECK(d["total"]["completion_tokens"].GetInt() == 25);
  CHECK(d["total"]["turns"].GetInt() == 4);

  auto [one_status, one] = run_process({STARGAZER_BINARY, "usage", "--instance", "inst-1", "--from", "2020-01-01",
                                        "--to", "2020-12-31", "--json", "--redis-url", server.url()});
  INFO(one);
  REQUIRE(one_status == 0);
  rapidjson::Document o;
  o.Parse(one.c_str(), one.size());
  REQUIRE_FALSE(o.HasParseError());
  REQUIRE(o["channels"].Size() == 1);
  CHECK(o["channels"][0]["days"].Size() == 1);
  CHECK(std::string(o["channels"][0]["days"][0]["date"].GetString()) == "2020-01-01");
  CHECK(o["total"]["turns"].GetInt() == 1);

  auto [table_status, table] = run_process({STARGAZER_BINARY, "usage", "--redis-url", server.url()});
  INFO(table);
  CHECK(table_status == 0);
  CHECK(table.find("PLATFORM") != std::string::npos);
  CHECK(table.find("!room:example.org") != std::string::npos);
  CHECK(table.find("TOTAL") != std::string::npos);

  auto [bad_status, bad] = run_process({STARGAZER_BINARY, "usage", "--from", "2025-13-01", "--redis-url", server.url()});
  CHECK(bad_status == 2);
  CHECK(bad.find("--from") != std::string::npos);
}
