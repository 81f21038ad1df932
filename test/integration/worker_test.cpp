// The worker's parts against a real redis-server: the status leader lease, the proxy
// adapter's envelopes, and the message processor talking to an OpenAI-compatible test
// server over HTTP.

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/rpc_client.hpp"
#include "stargazer/bus/stream_entry.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/llm/openai_client.hpp"
#include "stargazer/platform/message_cache.hpp"
#include "stargazer/worker/leader_lease.hpp"
#include "stargazer/worker/message_processor.hpp"
#include "stargazer/worker/proxy_adapter.hpp"

#include "fake_llm_server.hpp"

#include "redis_server.hpp"
#include "run_coro.hpp"

#include <catch2/catch.hpp>

using namespace stargazer;
using namespace stargazer::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;

TEST_CASE("one of two workers holds the status lease, a clean stop hands it over", "[worker][lease]") {
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
    const platform::send_context none;
    auto first = co_await adapter.send("room", "hello", none);
    auto file = co_await adapter.send_file("room", std::string("\x00\x01", 2), "a.bin", "application/octet-stream", none);
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

namespace {

// A real tool for the tool-call loop: adds two integers given as {"a":..,"b":..}.
class adding_tools final : public tools::tool_runner {
public:
  std::vector<llm::tool_definition> offered(const tools::call_context&) const override {
    return {{"add", "Adds two integers",
             R"({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]})"}};
  }
  asio::awaitable<std::string> run(const llm::tool_call& call, const tools::call_context&) override {
    ++calls;
    const auto a_at = call.arguments_json.find("\"a\":");
    const auto b_at = call.arguments_json.find("\"b\":");
    if (call.name != "add" || a_at == std::string::npos || b_at == std::string::npos) co_return "error: bad call";
    co_return std::to_string(std::stoi(call.arguments_json.substr(a_at + 4)) + std::stoi(call.arguments_json.substr(b_at + 4)));
  }
  int calls = 0;
};

struct processor_fixture {
  explicit processor_fixture(int max_retries = 0) {
    conn.start();
    llm::openai_settings s;
    s.base_url = llm_server.base_url();
    s.api_key = "test-key";
    s.max_retries = max_retries;
    s.backoff_initial = 10ms;
    s.timeout = 5s;
    model = std::make_shared<llm::openai_client>(io.get_executor(), s, &metrics);
  }
  ~processor_fixture() { conn.stop(); }

  // Runs one turn for `text` in channel "room" of the Redis platform.
  bus::outcome turn(worker::message_processor& p, const std::string& text, bool addressed = true) {
    bus::turn t;
    t.entry_id = std::to_string(++turns) + "-0";
    t.message.platform = "redis";
    t.message.channel_id = "room";
    t.message.user_id = "u1";
    t.message.username = "Ada";
    t.message.content = text;
    t.message.is_addressed = addressed;
    t.message.message_id = "m" + std::to_string(turns);
    t.message.timestamp = 1700000000 + turns;
    t.message.trace_id = "trace-" + std::to_string(turns);
    return run_coro(io, [&]() -> asio::awaitable<bus::outcome> {
      worker::proxy_adapter adapter(bus, rpc, "redis", {"star", "Star"}, &t);
      const auto m = worker::incoming_message_from(t.message);
      co_return co_await p.handle(m, adapter);
    }(), 20s);
  }

  // The texts of the message envelopes on the Redis platform's outbound stream.
  std::vector<std::string> replies() {
    auto range = run_coro(io, [&]() -> asio::awaitable<result<redis::reply>> {
      co_return co_await conn.command("XRANGE", "sg:stream:outbound:redis", "-", "+");
    }());
    std::vector<std::string> out;
    for (const auto& e : bus::parse_entries(*range)) {
      auto d = bus::decode_outbound(e.field("data"));
      if (auto* env = std::get_if<bus::outbound_envelope>(&d); env && env->type == bus::outbound_type::message)
        out.push_back(env->text);
    }
    return out;
  }

  redis_server server;
  fake_llm_server llm_server;
  asio::io_context io;
  metrics::registry metrics;
  redis::connection_settings settings = redis::settings_from_url(server.url());
  redis::connection conn{io.get_executor(), settings};
  bus::event_bus bus{conn, bus::event_bus_settings{}};
  bus::rpc_client rpc{bus, settings, 300ms};
  platform::message_cache cache{conn};
  std::shared_ptr<llm::client> model;
  int turns = 0;
};

}  // namespace

TEST_CASE("the processor answers with the model's reply and gives it the attributed history", "[worker][processor]") {
  processor_fixture f;
  worker::processor_settings s;
  s.model = "test-model";
  s.bot_name = "Nova";
  worker::message_processor p(f.cache, f.model, s, nullptr, &f.metrics);
  f.llm_server.push(fake_reply::reply("first answer"));
  f.llm_server.push(fake_reply::reply("second answer"));
  CHECK(f.turn(p, "hello there").what == bus::outcome::kind::ack);
  CHECK(f.turn(p, "and again").what == bus::outcome::kind::ack);
  CHECK(f.replies() == std::vector<std::string>{"first answer", "second answer"});

  const auto requests = f.llm_server.requests();
  REQUIRE(requests.size() == 2);
  CHECK(requests[0].authorization == "Bearer test-key");
  const auto& second = requests[1].body;
  INFO(second);
  CHECK(second.find(R"("model":"test-model")") != std::string::npos);
  CHECK(second.find("You are Nova") != std::string::npos);           // the system prompt, rendered
  CHECK(second.find("Ada: hello there") != std::string::npos);       // history with attribution
  CHECK(second.find("Ada: and again") != std::string::npos);         // the message itself
  // The model's reply is not in the worker's cache (the gateway stores what it delivers);
  // both user messages are.
  CHECK(f.server.cli({"ZCARD", "channel_msgs:redis:room"}) == "2");
}

TEST_CASE("typing is shown only for a turn slower than the typing delay, and stops before the reply",
          "[worker][processor]") {
  processor_fixture f;
  worker::processor_settings s;
  s.typing_delay = 150ms;
  worker::message_processor p(f.cache, f.model, s);
  f.llm_server.push(fake_reply::reply("quick"));
  auto slow = fake_reply::reply("slow");
  slow.delay = 600ms;
  f.llm_server.push(slow);
  CHECK(f.turn(p, "fast one").what == bus::outcome::kind::ack);
  CHECK(f.turn(p, "slow one").what == bus::outcome::kind::ack);
  auto range = run_coro(f.io, [&]() -> asio::awaitable<result<redis::reply>> {
    co_return co_await f.conn.command("XRANGE", "sg:stream:outbound:redis", "-", "+");
  }());
  REQUIRE(range);
  std::vector<std::string> seen;
  for (const auto& e : bus::parse_entries(*range)) {
    auto d = bus::decode_outbound(e.field("data"));
    REQUIRE(std::holds_alternative<bus::outbound_envelope>(d));
    const auto& env = std::get<bus::outbound_envelope>(d);
    seen.push_back(std::string(bus::to_string(env.type)) + (env.text.empty() ? "" : ":" + env.text));
  }
  CHECK(seen == std::vector<std::string>{"message:quick", "start_typing", "stop_typing", "message:slow"});
}

TEST_CASE("an unaddressed message is stored for context and gets no reply", "[worker][processor]") {
  processor_fixture f;
  worker::message_processor p(f.cache, f.model, worker::processor_settings{});
  CHECK(f.turn(p, "just chatting", false).what == bus::outcome::kind::ack);
  CHECK(f.llm_server.request_count() == 0);
  CHECK(f.replies().empty());
  CHECK(f.server.cli({"ZCARD", "channel_msgs:redis:room"}) == "1");
  CHECK(f.server.cli({"HGET", "sg:msg:redis:room:m1", "text"}) == "just chatting");
}

TEST_CASE("a tool call runs the tool and the model answers with its result", "[worker][processor]") {
  processor_fixture f;
  adding_tools tools;
  worker::message_processor p(f.cache, f.model, worker::processor_settings{}, &tools);
  f.llm_server.push(fake_reply::tool_calls({{"add", R"({"a":2,"b":3})"}}));
  f.llm_server.push(fake_reply::reply("2 + 3 = 5"));
  CHECK(f.turn(p, "what is 2 + 3?").what == bus::outcome::kind::ack);
  CHECK(tools.calls == 1);
  CHECK(f.replies() == std::vector<std::string>{"2 + 3 = 5"});
  const auto requests = f.llm_server.requests();
  REQUIRE(requests.size() == 2);
  CHECK(requests[0].body.find(R"("name":"add")") != std::string::npos);  // offered in the tools format
  const auto& second = requests[1].body;
  INFO(second);
  CHECK(second.find(R"("role":"tool")") != std::string::npos);
  CHECK(second.find(R"("content":"5")") != std::string::npos);
  CHECK(second.find(R"("tool_call_id")") != std::string::npos);
}

TEST_CASE("tool rounds are bounded: the last call offers no tools", "[worker][processor]") {
  processor_fixture f;
  adding_tools tools;
  worker::processor_settings s;
  s.max_tool_rounds = 2;
  worker::message_processor p(f.cache, f.model, s, &tools);
  for (int i = 0; i < 3; ++i) f.llm_server.push(fake_reply::tool_calls({{"add", R"({"a":1,"b":1})"}}));
  CHECK(f.turn(p, "loop forever").what == bus::outcome::kind::ack);
  const auto requests = f.llm_server.requests();
  REQUIRE(requests.size() == 3);  // two rounds with tools, then one without
  CHECK(requests[1].body.find(R"("tools")") != std::string::npos);
  CHECK(requests[2].body.find(R"("tools")") == std::string::npos);
  CHECK(tools.calls == 2);
}

TEST_CASE("a failing model gives the user a short apology and the turn is not retried", "[worker][processor]") {
  processor_fixture f(1);
  worker::message_processor p(f.cache, f.model, worker::processor_settings{}, nullptr, &f.metrics);
  f.llm_server.push(fake_reply::error(500));
  f.llm_server.push(fake_reply::error(503));
  CHECK(f.turn(p, "are you there?").what == bus::outcome::kind::ack);
  CHECK(f.llm_server.request_count() == 2);  // one retry, then the apology
  CHECK(f.replies() == std::vector<std::string>{std::string(worker::apology_text)});
  CHECK(f.metrics.render().find(R"(stargazer_turns_total{outcome="model_failed"} 1)") != std::string::npos);
}

TEST_CASE("a channel keeps --history-keep messages: storing one more deletes the oldest hash and its entry",
          "[worker][cache]") {
  redis_server server;
  asio::io_context io;
  redis::connection conn(io.get_executor(), redis::settings_from_url(server.url()));
  conn.start();
  platform::message_cache cache(conn);
  platform::message_cache::keep_per_channel(3);
  run_coro(io, [&]() -> asio::awaitable<void> {
    for (int i = 1; i <= 5; ++i) {
      const platform::cached_message m{"m" + std::to_string(i), "u", "Ada", "t" + std::to_string(i),
                                       1700000000.0 + i, false, {}};
      CHECK_FALSE(co_await cache.store("redis", "room", m));
    }
    // Another channel is counted on its own.
    const platform::cached_message elsewhere{"x1", "u", "Bob", "x", 1.0, false, {}};
    CHECK_FALSE(co_await cache.store("redis", "other", elsewhere));
  }(), 10s);
  platform::message_cache::keep_per_channel(1000);  // the default, for the tests after this one
  CHECK(server.cli({"ZRANGE", "channel_msgs:redis:room", "0", "-1"}) ==
        "sg:msg:redis:room:m3\nsg:msg:redis:room:m4\nsg:msg:redis:room:m5");
  CHECK(server.cli({"EXISTS", "sg:msg:redis:room:m1", "sg:msg:redis:room:m2"}) == "0");
  CHECK(server.cli({"EXISTS", "sg:msg:redis:room:m3", "sg:msg:redis:other:x1"}) == "2");
  CHECK(server.cli({"TTL", "channel_msgs:redis:room"}) != "-1");
  conn.stop();
}

TEST_CASE("a remembering message cache reads what others wrote and returns what a plain one returns",
          "[worker][cache]") {
  redis_server server;
  asio::io_context io;
  redis::connection conn(io.get_executor(), redis::settings_from_url(server.url()));
  conn.start();
  platform::message_cache plain(conn);
  platform::message_cache remembering(conn, 3);  // smaller than the history: eviction is exercised
  const auto texts = [](const std::vector<platform::cached_message>& v) {
    std::vector<std::string> out;
    for (const auto& m : v) out.push_back(m.user_name + ":" + m.text);
    return out;
  };
  run_coro(io, [&]() -> asio::awaitable<void> {
    for (int i = 1; i <= 5; ++i) {
      const platform::cached_message m{"m" + std::to_string(i), "u", i % 2 != 0 ? "Ada" : "Bob", "t" + std::to_string(i),
                                       1700000000.0 + i, false, {}};
      // Odd messages through the remembering cache, even ones written by someone else.
      auto& writer = i % 2 != 0 ? remembering : plain;
      CHECK_FALSE(co_await writer.store("redis", "room", m));
    }
    const std::vector<std::string> newest_first{"Bob:t4", "Ada:t3", "Bob:t2"};
    for (int round = 0; round < 2; ++round) {  // cold, then from memory
      auto a = co_await remembering.recent("redis", "room", 3, 1700000004.5);
      auto b = co_await plain.recent("redis", "room", 3, 1700000004.5);
      REQUIRE(a);
      REQUIRE(b);
      CHECK(texts(*a) == newest_first);
      CHECK(texts(*b) == newest_first);
    }
    // More than it can remember: the evicted ones are fetched again.
    auto all = co_await remembering.recent("redis", "room", 10);
    auto reference = co_await plain.recent("redis", "room", 10);
    REQUIRE(all);
    REQUIRE(reference);
    CHECK(all->size() == 5);
    CHECK(texts(*all) == texts(*reference));
    co_await conn.command("DEL", "sg:msg:redis:room:m1");  // expired: skipped unless remembered
    auto fresh = co_await plain.recent("redis", "room", 10);
    REQUIRE(fresh);
    CHECK(fresh->size() == 4);
  }(), 10s);
  conn.stop();
}
