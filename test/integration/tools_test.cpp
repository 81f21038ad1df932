// Tools against a real redis-server: each built-in, the registry's refusals, remote
// execution through the tools stream (round trip, a tools process dying mid-call), and
// a scripted model calling two tools in one turn, in process and remote alike.

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/rpc_client.hpp"
#include "stargazer/llm/openai_client.hpp"
#include "stargazer/platform/message_cache.hpp"
#include "stargazer/tools/builtin.hpp"
#include "stargazer/worker/cache_history.hpp"
#include "stargazer/tools/dispatcher.hpp"
#include "stargazer/tools/remote.hpp"
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

namespace {

struct tools_fixture {
  tools_fixture() {
    conn.start();
    tools::add_builtin_tools(registry, conn, worker::history_from_cache(conn));
    ctx.platform = "redis";
    ctx.channel_id = "room";
    ctx.user_id = "u1";
    ctx.user_name = "Ada";
  }
  ~tools_fixture() { conn.stop(); }

  tools::tool_output run(const std::string& name, const std::string& args) {
    return run_coro(io, registry.execute(name, args, ctx));
  }

  redis_server server;
  asio::io_context io;
  redis::connection_settings settings = redis::settings_from_url(server.url());
  redis::connection conn{io.get_executor(), settings};
  bus::event_bus bus{conn, bus::event_bus_settings{}};
  tools::registry registry{tools::registry_settings{.default_deadline = 2s}};
  tools::call_context ctx;
};

bool is_error(const tools::tool_output& o) { return o.text.rfind("error: ", 0) == 0; }

}  // namespace

TEST_CASE("built-in tools: time, calculator, notes, files, history", "[tools]") {
  tools_fixture f;
  CHECK(f.run("calculator", R"({"expression":"(2+3)*4"})").text == "20");
  CHECK(f.run("current_time", R"({"timezone":"Europe/Paris"})").text.find("(UTC+0") != std::string::npos);
  CHECK(f.run("current_time", "{}").text.find("UTC (UTC+00:00)") != std::string::npos);

  const auto remembered = f.run("remember_note", R"({"text":"the deploy is on Friday"})");
  REQUIRE(remembered.text.rfind("remembered as note ", 0) == 0);
  const auto id = remembered.text.substr(19);
  CHECK(f.server.cli({"HGET", tools::notes_key("redis", "room"), id}) == "the deploy is on Friday");
  CHECK(f.run("recall_notes", R"({"contains":"deploy"})").text.find("[" + id + "] the deploy is on Friday") !=
        std::string::npos);
  CHECK(f.run("recall_notes", R"({"contains":"nothing like it"})").text == "no notes");
  CHECK(f.run("forget_note", R"({"id":")" + id + R"("})").text == "forgot note " + id);
  CHECK(is_error(f.run("forget_note", R"({"id":")" + id + R"("})")));

  const auto csv = f.run("create_file", R"({"filename":"../report","format":"csv","rows":[["a","b, c"],[1,true]]})");
  REQUIRE(csv.media.size() == 1);
  CHECK(csv.media[0].filename == ".._report.csv");
  CHECK(csv.media[0].mimetype == "text/csv");
  CHECK(csv.media[0].data == "a,\"b, c\"\r\n1,true\r\n");
  CHECK(is_error(f.run("create_file", R"({"filename":"x","format":"json","content":"{nope"})")));
  CHECK(f.run("create_file", R"({"filename":"x.json","format":"json","content":"{\"a\":1}"})").media[0].filename ==
        "x.json");

  run_coro(f.io, [&]() -> asio::awaitable<void> {
    platform::message_cache cache(f.conn);
    // Named messages: GCC 12 miscompiles braced temporaries inside co_await.
    const platform::cached_message first{"m1", "u1", "Ada", "first", 1700000000, false, {}};
    const platform::cached_message second{"m2", "star", "Star", "second", 1700000060, true, {}};
    co_await cache.store("redis", "room", first);
    co_await cache.store("redis", "room", second);
  }());
  const auto history = f.run("read_channel_history", R"({"limit":5})").text;
  INFO(history);
  CHECK(history.find("[2023-11-14 22:13 UTC] Ada: first\n[2023-11-14 22:14 UTC] Star (bot): second") != std::string::npos);
}

TEST_CASE("the registry refuses bad calls with a result the model can read", "[tools]") {
  tools_fixture f;
  CHECK(f.run("no_such_tool", "{}").text == "error: unknown tool 'no_such_tool'");
  CHECK(f.run("calculator", "{").text == "error: the arguments are not a JSON object");
  CHECK(f.run("calculator", "{}").text == "error: expression: missing required argument");
  CHECK(f.run("calculator", R"({"expression":7})").text == "error: expression: expected string, got integer");
  CHECK(f.run("calculator", R"({"expression":"1/0"})").text.find("division by zero") != std::string::npos);
  CHECK(f.run("channel_info", "{}").text == "error: channel_info runs on the gateway only");

  f.registry.set_permissions(std::get<0>(tools::parse_permissions(R"({"calculator":{"deny_users":["u1"]}})")));
  CHECK(f.run("calculator", R"({"expression":"1"})").text == "error: permission denied: 'calculator' is not allowed here");
  bool offered = false;
  for (const auto& d : f.registry.definitions(f.ctx)) offered = offered || d.name == "calculator";
  CHECK_FALSE(offered);

  SECTION("a tool past its deadline is reported, and the result size is limited") {
    tools::registry slow(tools::registry_settings{.default_deadline = 100ms, .max_result_bytes = 10});
    slow.add({"sleepy", "sleeps", R"({"type":"object"})",
              [](const rapidjson::Value&, tools::call_context&) -> asio::awaitable<tools::tool_output> {
                co_await sleep_for(2s);
                co_return tools::tool_output{"late", {}};
              }});
    slow.add({"chatty", "talks", R"({"type":"object"})",
              [](const rapidjson::Value&, tools::call_context&) -> asio::awaitable<tools::tool_output> {
                co_return tools::tool_output{std::string(100, 'x'), {}};
              }});
    const auto started = std::chrono::steady_clock::now();
    CHECK(run_coro(f.io, slow.execute("sleepy", "{}", f.ctx)).text == "error: 'sleepy' did not finish within 100 ms");
    CHECK(std::chrono::steady_clock::now() - started < 1s);
    CHECK(run_coro(f.io, slow.execute("chatty", "{}", f.ctx)).text == "xxxxxxxxxx\n[result cut at 10 bytes]");
    CHECK_THROWS_AS(slow.add({"chatty", "again", "{}", {}}), std::invalid_argument);
    CHECK_THROWS_AS(slow.add({"bad", "schema", "[", {}}), std::invalid_argument);
  }
}

TEST_CASE("remote tools: a round trip through the tools stream gives the in-process result", "[tools][remote]") {
  tools_fixture f;
  run_coro(f.io, f.bus.ensure_streams(role::standalone, {"redis"}));
  tools::tool_service service(f.conn, f.settings, f.bus, f.registry, "tools-1");
  tools::remote_tool_client client(f.conn, f.settings, f.bus, "worker-1");
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await service.start();
    co_await client.start();
    auto out = co_await client.call("calculator", R"({"expression":"6*7"})", f.ctx, 5s);
    CHECK(out.text == "42");
    auto file = co_await client.call("create_file", R"({"filename":"a","format":"text","content":"hi"})", f.ctx, 5s);
    REQUIRE(file.media.size() == 1);
    CHECK(file.media[0].data == "hi");
    auto refused = co_await client.call("calculator", "{}", f.ctx, 5s);
    CHECK(refused.text == "error: expression: missing required argument");
    CHECK(client.waiting() == 0);
    co_await client.stop(1s);
    co_await service.stop(1s);
  }(), 20s);
  CHECK(f.server.cli({"EXISTS", "sg:tools:reply:worker-1"}) == "0");  // deleted on stop
}

TEST_CASE("remote tools: a request taken by a tools process that dies is re-run elsewhere and answered once",
          "[tools][remote]") {
  tools_fixture f;
  run_coro(f.io, f.bus.ensure_streams(role::standalone, {"redis"}));
  // The dying process's tool never finishes; the survivor's answers at once.
  tools::registry stuck, healthy;
  const auto answer = [](std::chrono::milliseconds delay, std::string text) {
    return [delay, text](const rapidjson::Value&, tools::call_context&) -> asio::awaitable<tools::tool_output> {
      co_await sleep_for(delay);
      co_return tools::tool_output{text, {}};
    };
  };
  stuck.add({"work", "works", R"({"type":"object"})", answer(1h, "from the dead"), false, 2h});
  healthy.add({"work", "works", R"({"type":"object"})", answer(0ms, "done by the survivor")});
  tools::tool_service_settings fast;
  fast.consumer.autoclaim_interval = 100ms;
  fast.consumer.autoclaim_min_idle = 300ms;
  fast.consumer.block = 100ms;
  auto dying = std::make_unique<tools::tool_service>(f.conn, f.settings, f.bus, stuck, "tools-dying", fast);
  tools::tool_service survivor(f.conn, f.settings, f.bus, healthy, "tools-survivor", fast);
  tools::remote_tool_client client(f.conn, f.settings, f.bus, "worker-1");
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await client.start();
    co_await dying->start();
    std::optional<tools::tool_output> out;
    asio::co_spawn(co_await asio::this_coro::executor,
                   [&]() -> asio::awaitable<void> { out = co_await client.call("work", "{}", f.ctx, 10s); },
                   asio::detached);
    CHECK(co_await eventually([&] { return f.server.cli({"XPENDING", "sg:stream:tools", "sg:tools"}).rfind("1", 0) == 0; }));
    dying.reset();  // killed: its entry stays pending, unacknowledged
    co_await survivor.start();
    CHECK(co_await eventually([&] { return out.has_value(); }, 8s));
    if (out) CHECK(out->text == "done by the survivor");
    co_await survivor.stop(1s);
    co_await client.stop(1s);
  }(), 30s);
  CHECK(f.server.cli({"XPENDING", "sg:stream:tools", "sg:tools"}).rfind("0", 0) == 0);
}

TEST_CASE("a scripted model calls two tools in one turn, in-process and remote give the same answer",
          "[tools][processor]") {
  for (const auto mode : {tools::execution_mode::in_process, tools::execution_mode::remote}) {
    INFO((mode == tools::execution_mode::remote ? "remote" : "in process"));
    tools_fixture f;
    fake_llm_server llm;
    run_coro(f.io, f.bus.ensure_streams(role::standalone, {"redis"}));
    tools::tool_service service(f.conn, f.settings, f.bus, f.registry, "tools-1");
    tools::remote_tool_client client(f.conn, f.settings, f.bus, "worker-1");
    tools::dispatcher dispatcher(f.registry, mode, &client);
    llm::openai_settings s;
    s.base_url = llm.base_url();
    s.max_retries = 0;
    auto model = std::make_shared<llm::openai_client>(f.io.get_executor(), s);
    platform::message_cache cache(f.conn);
    worker::message_processor processor(cache, model, worker::processor_settings{}, &dispatcher);
    bus::rpc_client rpc(f.bus, f.settings, 300ms);
    llm.push(fake_reply::tool_calls({{"calculator", R"({"expression":"12*12"})"},
                                     {"create_file", R"({"filename":"n","format":"text","content":"144"})"}}));
    llm.push(fake_reply::reply("12 squared is 144; the file is attached."));
    bus::turn t;
    t.entry_id = "1-1";
    t.message.platform = "redis";
    t.message.channel_id = "room";
    t.message.username = "Ada";
    t.message.content = "square 12 and save it";
    t.message.message_id = "m1";
    run_coro(f.io, [&]() -> asio::awaitable<void> {
      co_await service.start();
      co_await client.start();
      worker::proxy_adapter adapter(f.bus, rpc, "redis", {"star", "Star"}, &t);
      auto outcome = co_await processor.handle(worker::incoming_message_from(t.message), adapter);
      CHECK(outcome.what == bus::outcome::kind::ack);
      co_await client.stop(1s);
      co_await service.stop(1s);
    }(), 20s);
    const auto requests = llm.requests();
    REQUIRE(requests.size() == 2);
    const auto& second = requests[1].body;
    INFO(second);
    CHECK(second.find(R"("content":"144")") != std::string::npos);
    CHECK(second.find("created n.txt (3 bytes)") != std::string::npos);
    // The file went to the channel before the reply, both with the turn's message keys.
    const auto stream = f.server.cli({"XLEN", "sg:stream:outbound:redis"});
    CHECK(std::stoi(stream) >= 2);  // file and reply (and typing start/stop if the turn outlasted typing_delay)
  }
}
