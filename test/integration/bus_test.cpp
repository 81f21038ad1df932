// The event bus and the consumer engine against a real redis-server.

#include "stargazer/bus/channel_sequencer.hpp"
#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/inbound_consumer.hpp"
#include "stargazer/bus/lock.hpp"
#include "stargazer/bus/outbound_consumer.hpp"
#include "stargazer/platform/dispatcher.hpp"
#include "stargazer/bus/rpc_client.hpp"
#include "stargazer/bus/stream_consumer.hpp"
#include "stargazer/core/error.hpp"
#include "stargazer/core/metrics.hpp"

#include "recording_adapter.hpp"
#include "redis_server.hpp"
#include "run_coro.hpp"

#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <set>

using namespace stargazer;
using namespace stargazer::bus;
using namespace stargazer::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

struct bus_fixture {
  bus_fixture() : settings(redis::settings_from_url(server.url())), conn(io.get_executor(), settings) {
    conn.start();
    bus = std::make_unique<event_bus>(conn, event_bus_settings{}, &metrics);
  }

  consumer_settings consumer(const std::string& stream, const std::string& group, const std::string& name) {
    consumer_settings c;
    c.stream = stream;
    c.group = group;
    c.consumer = name;
    c.autoclaim_interval = 1h;  // sweeps are run by hand
    c.autoclaim_min_idle = 0ms;
    c.block = 200ms;
    return c;
  }

  inbound_envelope inbound(const std::string& channel, const std::string& text) {
    inbound_envelope e;
    e.platform = "redis";
    e.channel_id = channel;
    e.content = text;
    e.trace_id = random_hex_id();
    return e;
  }

  // Channel c's "first" (seq 1), held by a worker that died, then its "second" (seq 2).
  asio::awaitable<void> publish_behind_a_dead_worker() {
    co_await bus->ensure_group("sg:stream:inbound", "sg:workers");
    co_await bus->publish_inbound(inbound("c", "first"));
    co_await conn.command("XREADGROUP", "GROUP", "sg:workers", "dead-worker", "COUNT", 1, "STREAMS",
                          "sg:stream:inbound", ">");
    co_await bus->publish_inbound(inbound("c", "second"));
  }

  // An inbound worker "w" that records each turn's text and acknowledges it.
  std::unique_ptr<inbound_consumer> recording_worker(std::vector<std::string>& handled,
                                                     const inbound_consumer_settings& s) {
    return std::make_unique<inbound_consumer>(
        conn, settings, *bus, "w",
        [&handled](const turn& t) -> asio::awaitable<outcome> {
          handled.push_back(t.message.content);
          co_return outcome::ack();
        },
        s);
  }

  redis_server server;
  asio::io_context io;
  metrics::registry metrics;
  redis::connection_settings settings;
  redis::connection conn;
  std::unique_ptr<event_bus> bus;
};

}  // namespace

TEST_CASE("ensure_streams creates the groups once and publishing adds ordered entries", "[bus]") {
  bus_fixture f;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    const std::vector<std::string> platforms{"redis", "webchat"};
    co_await f.bus->ensure_streams(role::standalone, platforms);
    co_await f.bus->ensure_streams(role::standalone, platforms);  // idempotent (BUSYGROUP)
    auto a = co_await f.bus->publish_inbound(f.inbound("c1", "one"));
    auto b = co_await f.bus->publish_inbound(f.inbound("c1", "two"));
    auto c = co_await f.bus->publish_inbound(f.inbound("c2", "three"));
    REQUIRE(a);
    REQUIRE(b);
    REQUIRE(c);
    auto entries = co_await f.conn.command("XRANGE", "sg:stream:inbound", "-", "+");
    auto parsed = parse_entries(*entries);
    REQUIRE(parsed.size() == 3);
    CHECK(parsed[0].field("okey") == "redis:c1");
    CHECK(parsed[0].field("seq") == "1");
    CHECK(parsed[1].field("seq") == "2");
    CHECK(parsed[2].field("seq") == "1");
    CHECK(parsed[2].field("trace_id").size() == 32);
    auto stats = co_await f.bus->stats("sg:stream:inbound", "sg:workers");
    CHECK(stats->length == 3);
    CHECK(stats->lag == 3);
  }());
  CHECK(f.server.cli({"XINFO", "GROUPS", "sg:stream:outbound:webchat"}).find("sg:gateway:webchat") != std::string::npos);
  CHECK(f.server.cli({"XINFO", "GROUPS", "sg:stream:tools"}).find("sg:tools") != std::string::npos);
}

TEST_CASE("a consumer started before its group exists creates it and reads without pausing", "[bus]") {
  bus_fixture f;
  std::vector<std::string> seen;
  auto settings = f.consumer("early", "g", "c0");
  settings.error_pause = 10s;  // a pause after NOGROUP would show as a missed deadline
  stream_consumer consumer(f.conn, f.settings, settings,
                           [&](const stream_entry& e, const delivery&) -> asio::awaitable<outcome> {
                             seen.emplace_back(e.field("data"));
                             co_return outcome::ack();
                           });
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await consumer.start();
    CHECK(co_await eventually([&] { return f.server.cli({"EXISTS", "early"}).rfind("1", 0) == 0; }, 2s));
    co_await f.bus->publish("early", "first", "", "");
    CHECK(co_await eventually([&] { return seen.size() == 1; }, 2s));
    co_await consumer.stop(1s);
  }(), 8s);
  CHECK(seen == std::vector<std::string>{"first"});
}

TEST_CASE("three consumers share a group: every entry is processed exactly once", "[bus]") {
  bus_fixture f;
  std::map<std::string, int> seen;
  std::map<std::string, int> per_consumer;
  std::vector<std::unique_ptr<stream_consumer>> consumers;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await f.bus->ensure_group("s", "g");
    for (int i = 0; i < 3; ++i) {
      const auto name = "c" + std::to_string(i);
      consumers.push_back(std::make_unique<stream_consumer>(
          f.conn, f.settings, f.consumer("s", "g", name),
          [&, name](const stream_entry& e, const delivery&) -> asio::awaitable<outcome> {
            ++seen[std::string(e.field("data"))];
            ++per_consumer[name];
            co_await sleep_for(1ms);
            co_return outcome::ack();
          }));
      co_await consumers.back()->start();
    }
    for (int i = 0; i < 300; ++i) co_await f.bus->publish("s", "m" + std::to_string(i), "", "");
    CHECK(co_await eventually([&] { return seen.size() == 300; }));
    for (auto& c : consumers) co_await c->stop(1s);
  }(), 30s);
  for (const auto& [k, n] : seen) CHECK(n == 1);
  CHECK(per_consumer.size() == 3);
  CHECK(f.server.cli({"XPENDING", "s", "g"}).rfind("0", 0) == 0);
}

TEST_CASE("an entry of a consumer that died mid-entry is reclaimed and processed once", "[bus]") {
  bus_fixture f;
  int first_runs = 0, second_runs = 0;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await f.bus->ensure_group("s", "g");
    co_await f.bus->publish("s", "job", "", "");
    {
      stream_consumer dying(f.conn, f.settings, f.consumer("s", "g", "dying"),
                            [&](const stream_entry&, const delivery&) -> asio::awaitable<outcome> {
                              ++first_runs;
                              co_await sleep_for(1h);  // "crashes" before acking
                              co_return outcome::ack();
                            });
      co_await dying.start();
      CHECK(co_await eventually([&] { return first_runs == 1; }));
      co_await dying.stop(0ms);  // the process dies: the entry stays pending
    }
    stream_consumer survivor(f.conn, f.settings, f.consumer("s", "g", "survivor"),
                             [&](const stream_entry& e, const delivery& d) -> asio::awaitable<outcome> {
                               ++second_runs;
                               CHECK(d.reclaimed);
                               CHECK(d.attempts == 1);
                               CHECK(e.field("data") == "job");
                               co_return outcome::ack();
                             });
    co_await survivor.start();  // sweeps once at start
    CHECK(co_await eventually([&] { return second_runs == 1; }));
    co_await sleep_for(100ms);
    co_await survivor.sweep();
    co_await survivor.stop(1s);
  }(), 20s);
  CHECK(second_runs == 1);
  CHECK(f.server.cli({"XPENDING", "s", "g"}).rfind("0", 0) == 0);
  CHECK(f.server.cli({"HLEN", "s:attempts"}) == "0");
}

TEST_CASE("a consumer restarted under the same name takes its pending entries back at once", "[bus]") {
  bus_fixture f;
  int first_runs = 0, second_runs = 0;
  // No other consumer's sweep could take them: their idle time is far below the minimum.
  auto settings = f.consumer("s", "g", "worker-1");
  settings.autoclaim_min_idle = 1h;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await f.bus->ensure_group("s", "g");
    co_await f.bus->publish("s", "job", "", "");
    {
      stream_consumer crashed(f.conn, f.settings, settings,
                              [&](const stream_entry&, const delivery&) -> asio::awaitable<outcome> {
                                ++first_runs;
                                co_await sleep_for(1h);  // killed before acking
                                co_return outcome::ack();
                              });
      co_await crashed.start();
      CHECK(co_await eventually([&] { return first_runs == 1; }));
      co_await crashed.stop(0ms);
    }
    stream_consumer restarted(f.conn, f.settings, settings,
                              [&](const stream_entry& e, const delivery& d) -> asio::awaitable<outcome> {
                                ++second_runs;
                                CHECK(d.reclaimed);
                                CHECK(d.attempts == 1);  // a crash counts: a poison pill cannot loop forever
                                CHECK(e.field("data") == "job");
                                co_return outcome::ack();
                              });
    co_await restarted.start();
    CHECK(co_await eventually([&] { return second_runs == 1; }, 2s));
    co_await restarted.stop(1s);
  }(), 20s);
  CHECK(second_runs == 1);
  CHECK(f.server.cli({"XPENDING", "s", "g"}).rfind("0", 0) == 0);
  CHECK(f.server.cli({"HLEN", "s:attempts"}) == "0");
}

TEST_CASE("a poison entry is dead-lettered after the attempt limit while the rest flows", "[bus]") {
  bus_fixture f;
  std::set<std::string> done;
  int poison_runs = 0;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await f.bus->ensure_group("s", "g");
    auto settings = f.consumer("s", "g", "c");
    settings.local_retries = 0;  // every run here is a delivery the sweep counts
    stream_consumer c(f.conn, f.settings, settings,
                      [&](const stream_entry& e, const delivery&) -> asio::awaitable<outcome> {
                        if (e.field("data") == "poison") {
                          ++poison_runs;
                          co_return outcome::retry("cannot handle this");
                        }
                        done.insert(std::string(e.field("data")));
                        co_return outcome::ack();
                      });
    co_await c.start();
    co_await f.bus->publish("s", "ok-1", "t1", "");
    co_await f.bus->publish("s", "poison", "t2", "");
    co_await f.bus->publish("s", "ok-2", "t3", "");
    CHECK(co_await eventually([&] { return done.size() == 2 && poison_runs == 1; }));
    for (int i = 0; i < 4; ++i) {
      co_await c.sweep();
      co_await sleep_for(20ms);
    }
    co_await c.stop(1s);
  }(), 20s);
  CHECK(poison_runs == 4);  // first delivery + 3 reclaims, then the DLQ
  const auto dlq = f.server.cli({"XRANGE", "s:dlq", "-", "+"});
  CHECK(dlq.find("poison") != std::string::npos);
  CHECK(dlq.find("max_attempts_exceeded") != std::string::npos);
  CHECK(dlq.find("dlq_consumer") != std::string::npos);
  CHECK(f.server.cli({"XLEN", "s:dlq"}) == "1");
  CHECK(f.server.cli({"XPENDING", "s", "g"}).rfind("0", 0) == 0);
}

TEST_CASE("an entry whose handler says retry runs again here with growing pauses before the sweep is needed",
          "[bus]") {
  bus_fixture f;
  std::vector<std::chrono::steady_clock::time_point> runs;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await f.bus->ensure_group("s", "g");
    auto settings = f.consumer("s", "g", "c");
    settings.retry_pause = 50ms;
    stream_consumer c(f.conn, f.settings, settings,
                      [&](const stream_entry&, const delivery& d) -> asio::awaitable<outcome> {
                        CHECK(d.attempts == 0);  // not reclaimed: retried in place
                        runs.push_back(std::chrono::steady_clock::now());
                        co_return runs.size() < 3 ? outcome::retry("platform 503") : outcome::ack();
                      });
    co_await f.bus->publish("s", "flaky", "", "");
    co_await c.start();
    CHECK(co_await eventually([&] { return c.processed() == 1; }, 5s));
    co_await c.stop(1s);
  }(), 20s);
  REQUIRE(runs.size() == 3);
  CHECK(runs[1] - runs[0] >= 50ms);
  CHECK(runs[2] - runs[1] >= 100ms);  // doubled
  CHECK(f.server.cli({"XPENDING", "s", "g"}).rfind("0", 0) == 0);
  CHECK(f.server.cli({"HLEN", "s:attempts"}) == "0");
}

TEST_CASE("the outbound consumer: dispatch by type, malformed to the DLQ, duplicates delivered once", "[bus]") {
  bus_fixture f;
  recording_adapter adapter;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    const std::vector<std::string> platforms{"redis"};
    co_await f.bus->ensure_streams(role::gateway, platforms);
    platform::outbound_dispatcher dispatch(adapter);
    outbound_consumer gateway(f.conn, f.settings, f.bus->names(), "gw", dispatch, {}, &f.metrics);
    co_await gateway.start();

    outbound_envelope m;
    m.channel_id = "c";
    m.text = "hello";
    m.message_key = "sg:msg:redis:c:1-0:0";
    m.response_nonce = "n1";
    co_await f.bus->publish_outbound("redis", m);
    co_await f.bus->publish_outbound("redis", m);  // a redelivered / replayed send
    outbound_envelope typing;
    typing.type = outbound_type::typing;
    typing.channel_id = "c";
    co_await f.bus->publish_outbound("redis", typing);
    outbound_envelope presence;
    presence.type = outbound_type::presence;
    presence.text = "thinking";
    co_await f.bus->publish_outbound("redis", presence);
    outbound_envelope done;
    done.type = outbound_type::turn_complete;
    done.channel_id = "c";
    done.response_nonce = "n1";
    co_await f.bus->publish_outbound("redis", done);
    co_await f.bus->publish("sg:stream:outbound:redis", "not msgpack at all", "", "");
    co_await f.conn.command("XADD", "sg:stream:outbound:redis", "*", "nodata", "x");

    CHECK(co_await eventually([&] { return adapter.count("turn_complete") == 1; }));
    CHECK(co_await eventually([&] { return f.server.cli({"XLEN", "sg:stream:outbound:redis:dlq"}) == "2"; }));
    co_await gateway.stop(1s);
  }(), 20s);
  CHECK(adapter.count("send") == 1);
  for (const auto& call : adapter.calls)
    if (call.kind == "send") CHECK(call.ctx.response_nonce == "n1");
  CHECK(adapter.count("typing") == 1);
  CHECK(adapter.count("presence") == 1);
  CHECK(f.server.cli({"HGET", "sg:msg:redis:c:1-0:0", "message_id"}) == "sent-1");
  CHECK(std::stol(f.server.cli({"TTL", "sg:msg:redis:c:1-0:0"})) > 7000000);
  const auto dlq = f.server.cli({"XRANGE", "sg:stream:outbound:redis:dlq", "-", "+"});
  CHECK(dlq.find("decode_error") != std::string::npos);
  CHECK(dlq.find("missing_data") != std::string::npos);
  CHECK(f.server.cli({"XPENDING", "sg:stream:outbound:redis", "sg:gateway:redis"}).rfind("0", 0) == 0);
}

TEST_CASE("a send that completes its turn: turn_complete follows its delivery, no separate entry", "[bus][inbound]") {
  bus_fixture f;
  recording_adapter adapter;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    const std::vector<std::string> platforms{"redis"};
    co_await f.bus->ensure_streams(role::standalone, platforms);
    platform::outbound_dispatcher dispatch(adapter);
    outbound_consumer gateway(f.conn, f.settings, f.bus->names(), "gw", dispatch);
    co_await gateway.start();
    // The handler's last send carries the completion, as the proxy adapter does it.
    auto handler = [&](const turn& t) -> asio::awaitable<outcome> {
      outbound_envelope reply;
      reply.channel_id = t.message.channel_id;
      reply.text = "answer";
      reply.message_key = t.message_key(0);
      reply.response_nonce = t.message.response_nonce;
      reply.completes_turn = true;
      co_await f.bus->publish_outbound(t.message.platform, reply);
      co_await f.bus->publish_outbound(t.message.platform, reply);  // a replayed send
      t.completion_published = true;
      co_return outcome::ack();
    };
    inbound_consumer worker(f.conn, f.settings, *f.bus, "w", handler);
    co_await worker.start();
    auto in = f.inbound("inst-1", "hi");
    in.response_nonce = "nonce-1";
    co_await f.bus->publish_inbound(in);
    CHECK(co_await eventually([&] { return adapter.count("turn_complete") == 2; }));
    co_await sleep_for(100ms);
    co_await worker.stop(1s);
    co_await gateway.stop(1s);
  }(), 20s);
  CHECK(adapter.count("send") == 1);
  REQUIRE(adapter.calls.size() == 3);
  CHECK(adapter.calls[0].kind == "send");
  CHECK(adapter.calls[1].kind == "turn_complete");  // after the delivery; again for the replay
  CHECK(f.server.cli({"XLEN", "sg:stream:outbound:redis"}) == "2");  // the two sends, no turn_complete entry
}

TEST_CASE("a reclaimed entry that only waits for its turn gives its attempt back until it runs", "[bus][order]") {
  bus_fixture f;
  channel_sequencer sequencer(f.conn, sequencer_settings{.stream = "s", .lock_prefix = "sg:lock:s:"});
  const stream_entry entry{"5-0", {{"data", "x"}, {"okey", "c"}, {"seq", "2"}}};  // its predecessor never came
  bool ran = false;
  std::string attempts_while_waiting;
  std::string attempts_when_running;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await f.conn.command("HSET", "s:attempts", "5-0", "3");  // taken over for the third time
    const delivery reclaimed{3, true, nullptr};
    asio::co_spawn(f.io, [&]() -> asio::awaitable<void> {
      co_await sequencer.run_in_order(entry, reclaimed, [&](order_mark&) -> asio::awaitable<outcome> {
        ran = true;
        attempts_when_running = f.server.cli({"HGET", "s:attempts", "5-0"});
        co_return outcome::ack();
      });
    }, asio::detached);
    CHECK(co_await eventually([&] { return f.server.cli({"HGET", "s:attempts", "5-0"}) == "2"; }, 2s));
    co_await sleep_for(200ms);
    attempts_while_waiting = f.server.cli({"HGET", "s:attempts", "5-0"});
    CHECK_FALSE(ran);
    co_await f.conn.command("ZADD", order_key("s", "c"), "1", "done");  // the predecessor is done
    CHECK(co_await eventually([&] { return ran; }, 2s));
  }(), 10s);
  CHECK(attempts_while_waiting == "2");  // a worker killed now leaves the count where it was
  CHECK(attempts_when_running == "3");   // the run that starts is the attempt
}

TEST_CASE("a failed send releases its claim and is retried until delivered once", "[bus]") {
  bus_fixture f;
  recording_adapter adapter;
  adapter.fail_next_sends = 1;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    const std::vector<std::string> platforms{"redis"};
    co_await f.bus->ensure_streams(role::gateway, platforms);
    outbound_consumer_settings s;
    s.consumer.autoclaim_interval = 50ms;
    s.consumer.autoclaim_min_idle = 0ms;
    platform::outbound_dispatcher dispatch(adapter);
    outbound_consumer gateway(f.conn, f.settings, f.bus->names(), "gw", dispatch, s);
    co_await gateway.start();
    outbound_envelope m;
    m.channel_id = "c";
    m.text = "retry me";
    m.message_key = "sg:msg:redis:c:2-0:0";
    co_await f.bus->publish_outbound("redis", m);
    CHECK(co_await eventually([&] { return adapter.count("send") == 1; }));
    co_await sleep_for(200ms);
    co_await gateway.stop(1s);
  }(), 20s);
  CHECK(adapter.count("send") == 1);
  CHECK(f.server.cli({"EXISTS", "sg:outbound:claim:sg:msg:redis:c:2-0:0"}) == "1");  // held by the delivery that sent
}

TEST_CASE("order per channel is kept for 50 channels x 100 messages with 3 workers", "[bus][order]") {
  bus_fixture f;
  std::map<std::string, std::vector<int>> order;
  std::size_t total = 0;
  std::mt19937 rng(7);
  std::vector<std::unique_ptr<channel_sequencer>> sequencers;
  std::vector<std::unique_ptr<stream_consumer>> workers;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await f.bus->ensure_group("sg:stream:inbound", "sg:workers");
    for (int w = 0; w < 3; ++w) {
      // One sequencer per worker, as in separate processes.
      sequencers.push_back(std::make_unique<channel_sequencer>(
          f.conn, sequencer_settings{.stream = "sg:stream:inbound", .lock_prefix = "sg:lock:inbound:"}));
      auto* seq = sequencers.back().get();
      auto settings = f.consumer("sg:stream:inbound", "sg:workers", "w" + std::to_string(w));
      settings.max_in_flight = 32;
      workers.push_back(std::make_unique<stream_consumer>(
          f.conn, f.settings, settings,
          seq->wrap([&](const stream_entry& e, const delivery&) -> asio::awaitable<outcome> {
            auto decoded = decode_inbound(e.field("data"));
            const auto& in = std::get<inbound_envelope>(decoded);
            co_await sleep_for(std::chrono::milliseconds(rng() % 3));
            order[in.channel_id].push_back(std::stoi(in.content));
            ++total;
            co_return outcome::ack();
          })));
    }
    for (int i = 0; i < 100; ++i)
      for (int c = 0; c < 50; ++c) co_await f.bus->publish_inbound(f.inbound("ch" + std::to_string(c), std::to_string(i)));
    for (auto& w : workers) co_await w->start();
    CHECK(co_await eventually([&] { return total == 5000; }, 60s));
    for (auto& w : workers) co_await w->stop(1s);
  }(), 90s);
  REQUIRE(order.size() == 50);
  for (const auto& [channel, seen] : order) {
    INFO(channel);
    REQUIRE(seen.size() == 100);
    CHECK(std::is_sorted(seen.begin(), seen.end()));
  }
  for (const auto& s : sequencers) CHECK(s->gaps() == 0);
  std::size_t busy = 0;
  for (const auto& w : workers) busy += w->processed() > 0;
  CHECK(busy == 3);
}

TEST_CASE("RPC: a round trip to the gateway, an unknown method, and a timeout", "[bus][rpc]") {
  bus_fixture f;
  recording_adapter adapter;
  adapter.history.push_back({"u1", "Ada", "earlier", 1700000000, "m1", false, "", ""});
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    const std::vector<std::string> platforms{"redis"};
    co_await f.bus->ensure_streams(role::gateway, platforms);
    platform::outbound_dispatcher dispatch(adapter);
    outbound_consumer gateway(f.conn, f.settings, f.bus->names(), "gw", dispatch);
    co_await gateway.start();
    rpc_client rpc(*f.bus, f.settings, 3s);
    auto history = co_await rpc.call("redis", "fetch_channel_history", R"({"limit":5})", "c", "t");
    REQUIRE(history);
    CHECK(history->ok);
    CHECK(history->result_json.find("\"text\":\"earlier\"") != std::string::npos);
    auto skip = co_await rpc.call("redis", "should_skip_channel_heartbeat", "{}", "c", "t");
    CHECK(skip->result_json == "true");
    auto unknown = co_await rpc.call("redis", "teleport", "{}", "c", "t");
    REQUIRE(unknown);
    CHECK_FALSE(unknown->ok);
    CHECK(unknown->error.find("Unknown RPC method") != std::string::npos);
    const auto started = std::chrono::steady_clock::now();
    auto nobody = co_await rpc.call("nowhere", "fetch_channel_history", "{}", "c", "t", 300ms);
    CHECK(nobody.error() == make_error_code(errc::timeout));
    CHECK(std::chrono::steady_clock::now() - started < 1500ms);
    co_await gateway.stop(1s);
  }(), 20s);
}

TEST_CASE("graceful stop drains entries in flight", "[bus]") {
  bus_fixture f;
  int finished = 0;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await f.bus->ensure_group("s", "g");
    stream_consumer c(f.conn, f.settings, f.consumer("s", "g", "c"),
                      [&](const stream_entry&, const delivery&) -> asio::awaitable<outcome> {
                        co_await sleep_for(200ms);
                        ++finished;
                        co_return outcome::ack();
                      });
    for (int i = 0; i < 5; ++i) co_await f.bus->publish("s", "x", "", "");
    co_await c.start();
    CHECK(co_await eventually([&] { return c.in_flight() == 5; }));
    co_await c.stop(2s);
  }(), 20s);
  CHECK(finished == 5);
  CHECK(f.server.cli({"XPENDING", "s", "g"}).rfind("0", 0) == 0);
}

TEST_CASE("distributed lock: exclusive, renewed while held, released only by its owner", "[bus][lock]") {
  bus_fixture f;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    distributed_lock a(f.conn, "sg:lock:test", 300ms);
    distributed_lock b(f.conn, "sg:lock:test", 300ms);
    CHECK(co_await a.try_acquire());
    CHECK_FALSE(co_await b.try_acquire());
    co_await sleep_for(700ms);  // past the TTL: renewal keeps it
    CHECK(a.held());
    CHECK_FALSE(co_await b.acquire(100ms));
    co_await a.release();
    CHECK(co_await b.acquire(1s));
    co_await a.release();  // not held: must not delete b's lock
    CHECK(f.server.cli({"GET", "sg:lock:test"}) == b.token());
    co_await b.release();
  }());
  CHECK(f.server.cli({"EXISTS", "sg:lock:test"}) == "0");
}

TEST_CASE("exactly once as the user sees it: a worker dies mid-turn, the replay sends nothing twice", "[bus][inbound]") {
  bus_fixture f;
  recording_adapter adapter;
  int runs = 0;
  metrics::registry m;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    const std::vector<std::string> platforms{"redis"};
    co_await f.bus->ensure_streams(role::standalone, platforms);
    platform::outbound_dispatcher dispatch(adapter);
    outbound_consumer gateway(f.conn, f.settings, f.bus->names(), "gw", dispatch);
    co_await gateway.start();

    // Each turn sends two replies; the first run dies after the first.
    auto handler = [&](const turn& t) -> asio::awaitable<outcome> {
      const int run = ++runs;
      for (std::size_t n = 0; n < 2; ++n) {
        outbound_envelope reply;
        reply.channel_id = t.message.channel_id;
        reply.text = "reply " + std::to_string(n) + " to " + t.message.content;
        reply.message_key = t.message_key(n);
        reply.trace_id = t.message.trace_id;
        co_await f.bus->publish_outbound(t.message.platform, reply);
        if (run == 1) co_await sleep_for(1h);  // killed here
      }
      co_return outcome::ack();
    };
    auto in = f.inbound("inst-1", "hi");
    in.response_nonce = "nonce-1";
    co_await f.bus->publish_inbound(in);
    {
      inbound_consumer dying(f.conn, f.settings, *f.bus, "w1", handler);
      co_await dying.start();
      CHECK(co_await eventually([&] { return adapter.count("send") == 1; }));
      co_await dying.stop(0ms);
    }
    inbound_consumer_settings s;
    s.consumer.autoclaim_min_idle = 0ms;
    inbound_consumer survivor(f.conn, f.settings, *f.bus, "w2", handler, s, &m);
    co_await survivor.start();  // sweeps at start: reclaims the turn
    CHECK(co_await eventually([&] { return adapter.count("turn_complete") == 1; }));
    co_await sleep_for(100ms);
    co_await survivor.stop(1s);
    co_await gateway.stop(1s);
  }(), 20s);
  CHECK(runs == 2);
  REQUIRE(adapter.count("send") == 2);
  std::vector<std::string> texts;
  for (const auto& c : adapter.calls)
    if (c.kind == "send") texts.push_back(c.text);
  CHECK(texts == std::vector<std::string>{"reply 0 to hi", "reply 1 to hi"});
  CHECK(m.render().find("stargazer_trace_transitions_total{state=\"COMPLETED\"} 1") != std::string::npos);
  CHECK(f.server.cli({"XPENDING", "sg:stream:inbound", "sg:workers"}).rfind("0", 0) == 0);
}

TEST_CASE("a malformed inbound entry is dead-lettered with its reason and the rest flows", "[bus][inbound]") {
  bus_fixture f;
  int handled = 0;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await f.bus->ensure_group("sg:stream:inbound", "sg:workers");
    inbound_consumer worker(f.conn, f.settings, *f.bus, "w", [&](const turn&) -> asio::awaitable<outcome> {
      ++handled;
      co_return outcome::ack();
    });
    co_await worker.start();
    co_await f.conn.command("XADD", "sg:stream:inbound", "*", "data", "\x93garbage", "trace_id", "t-bad");
    co_await f.bus->publish_inbound(f.inbound("c", "fine"));
    CHECK(co_await eventually([&] { return handled == 1; }));
    CHECK(co_await eventually([&] { return f.server.cli({"XLEN", "sg:stream:inbound:dlq"}) == "1"; }));
    co_await worker.stop(1s);
  }(), 20s);
  const auto dlq = f.server.cli({"XRANGE", "sg:stream:inbound:dlq", "-", "+"});
  CHECK(dlq.find("decode_error") != std::string::npos);
  CHECK(dlq.find("t-bad") != std::string::npos);  // the original fields are kept
}

TEST_CASE("an entry whose order mark cannot be written is not acknowledged until it is (chaos finding 6)",
          "[bus][order]") {
  bus_fixture f;
  int runs = 0;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await f.bus->ensure_group("s", "g");
    channel_sequencer sequencer(f.conn, sequencer_settings{.stream = "s", .lock_prefix = "sg:lock:s:"});
    co_await f.bus->publish("s", "first", "", "c");
    // The mark's key of the wrong type makes every mark write fail, as a lost connection
    // or a READONLY demoted master would, while the rest of Redis works.
    co_await f.conn.command("SET", order_key("s", "c"), "not a sorted set");
    auto settings = f.consumer("s", "g", "c");
    settings.retry_pause = 50ms;
    stream_consumer c(f.conn, f.settings, settings,
                      sequencer.wrap([&](const stream_entry&, const delivery&) -> asio::awaitable<outcome> {
                        ++runs;
                        co_return outcome::ack();
                      }));
    co_await c.start();
    CHECK(co_await eventually([&] { return runs == 1; }, 2s));
    co_await sleep_for(500ms);
    CHECK(f.server.cli({"XPENDING", "s", "g"}).rfind("1", 0) == 0);  // not acknowledged without its mark
    co_await f.conn.command("DEL", order_key("s", "c"));  // Redis writable again: the set as publishing left it
    co_await f.conn.command("ZADD", order_key("s", "c"), "1", "next", "0", "done");
    CHECK(co_await eventually([&] { return f.server.cli({"XPENDING", "s", "g"}).rfind("0", 0) == 0; }, 10s));
    co_await c.stop(1s);
  }(), 30s);
  CHECK(f.server.cli({"ZSCORE", order_key("s", "c"), "done"}) == "1");
}

TEST_CASE("a late predecessor that a successor stopped waiting for still runs when reclaimed", "[bus][order]") {
  bus_fixture f;
  std::vector<std::string> handled;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await f.publish_behind_a_dead_worker();
    inbound_consumer_settings s;
    s.order.order_wait = 300ms;  // the second stops waiting long before the first is reclaimed
    s.consumer.autoclaim_interval = 1h;       // swept below, by hand
    s.consumer.autoclaim_min_idle = 1500ms;   // not at the start-up sweep
    auto worker = f.recording_worker(handled, s);
    co_await worker->start();
    CHECK(co_await eventually([&] { return handled.size() == 1; }, 3s));
    CHECK(f.server.cli({"ZSCORE", order_key("sg:stream:inbound", "redis:c"), "gap:1"}) == "1");
    co_await sleep_for(1600ms);
    co_await worker->engine().sweep();  // the first is reclaimed: done is past it, but it never ran
    CHECK(co_await eventually([&] { return handled.size() == 2; }, 3s));
    CHECK(co_await eventually([&] {
      return f.server.cli({"ZSCORE", order_key("sg:stream:inbound", "redis:c"), "gap:1"}).empty();
    }, 3s));
    co_await worker->stop(1s);
  }(), 20s);
  REQUIRE(handled.size() == 2);
  CHECK(handled[0] == "second");
  CHECK(handled[1] == "first");
}

TEST_CASE("an order set gone while a successor waits comes back with done and its TTL", "[bus][order]") {
  bus_fixture f;
  std::vector<std::string> handled;
  const auto key = order_key("sg:stream:inbound", "redis:c");
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await f.publish_behind_a_dead_worker();
    co_await f.conn.command("DEL", key);  // e.g. expired, or its instance deleted
    inbound_consumer_settings s;
    s.order.order_wait = 300ms;
    s.consumer.autoclaim_interval = 1h;
    auto worker = f.recording_worker(handled, s);
    co_await worker->start();
    CHECK(co_await eventually([&] { return handled.size() == 1; }, 3s));
    CHECK(co_await eventually([&] { return f.server.cli({"ZSCORE", key, "done"}) == "2"; }, 3s));
    co_await worker->stop(1s);
  }(), 20s);
  CHECK(f.server.cli({"ZSCORE", key, "gap:1"}) == "1");  // the first still runs when it comes
  const auto ttl = std::stol(f.server.cli({"TTL", key}));
  CHECK(ttl > 0);
  CHECK(ttl <= order_set_ttl.count());
}

TEST_CASE("a channel stalled behind a retried entry does not stop other channels", "[bus][order]") {
  bus_fixture f;
  std::vector<std::string> handled;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await f.bus->ensure_group("sg:stream:inbound", "sg:workers");
    channel_sequencer seq(f.conn, sequencer_settings{.stream = "sg:stream:inbound", .lock_prefix = "sg:lock:inbound:",
                                                     .order_wait = 3s});
    auto settings = f.consumer("sg:stream:inbound", "sg:workers", "w");
    settings.max_in_flight = 4;
    stream_consumer worker(f.conn, f.settings, settings,
                           seq.wrap([&](const stream_entry& e, const delivery&) -> asio::awaitable<outcome> {
                             auto in = std::get<inbound_envelope>(decode_inbound(e.field("data")));
                             if (in.content == "fail") co_return outcome::retry("stuck");
                             handled.push_back(in.channel_id + ":" + in.content);
                             co_return outcome::ack();
                           }));
    co_await f.bus->publish_inbound(f.inbound("A", "fail"));
    for (int i = 0; i < 10; ++i) co_await f.bus->publish_inbound(f.inbound("A", std::to_string(i)));
    co_await f.bus->publish_inbound(f.inbound("B", "free"));
    co_await worker.start();
    const auto started = std::chrono::steady_clock::now();
    CHECK(co_await eventually([&] { return std::find(handled.begin(), handled.end(), "B:free") != handled.end(); }, 2s));
    CHECK(std::chrono::steady_clock::now() - started < 1s);
    co_await worker.stop(0ms);
  }(), 20s);
}

TEST_CASE("a slow entry reclaimed by its own consumer is not counted as an attempt", "[bus]") {
  bus_fixture f;
  int runs = 0;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await f.bus->ensure_group("s", "g");
    stream_consumer c(f.conn, f.settings, f.consumer("s", "g", "c"),
                      [&](const stream_entry&, const delivery&) -> asio::awaitable<outcome> {
                        ++runs;
                        co_await sleep_for(300ms);
                        co_return outcome::ack();
                      });
    co_await f.bus->publish("s", "slow", "", "");
    co_await c.start();
    CHECK(co_await eventually([&] { return runs == 1; }));
    co_await c.sweep();
    co_await c.sweep();
    CHECK(co_await eventually([&] { return c.in_flight() == 0; }));
    co_await sleep_for(50ms);
    co_await c.stop(1s);
  }(), 20s);
  CHECK(runs == 1);
  CHECK(f.server.cli({"HLEN", "s:attempts"}) == "0");
}

TEST_CASE("a redelivered entry whose first delivery died mid-send takes its claim over and sends", "[bus]") {
  bus_fixture f;
  recording_adapter adapter;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    const std::vector<std::string> platforms{"redis"};
    co_await f.bus->ensure_streams(role::gateway, platforms);
    outbound_envelope m;
    m.channel_id = "c";
    m.text = "survives a gateway crash";
    m.message_key = "sg:msg:redis:c:9-0:0";
    auto id = co_await f.bus->publish_outbound("redis", m);
    // The first delivery claimed the send and died: the claim holds its entry id.
    co_await f.conn.command("SET", claim_key(m.message_key), *id, "EX", 300);
    co_await f.conn.command("XREADGROUP", "GROUP", "sg:gateway:redis", "dead-gateway", "COUNT", 1, "STREAMS",
                            "sg:stream:outbound:redis", ">");
    outbound_consumer_settings s;
    s.consumer.autoclaim_min_idle = 0ms;
    platform::outbound_dispatcher dispatch(adapter);
    outbound_consumer gateway(f.conn, f.settings, f.bus->names(), "gw", dispatch, s);
    co_await gateway.start();  // sweeps at start: reclaims it
    CHECK(co_await eventually([&] { return adapter.count("send") == 1; }));
    co_await gateway.stop(1s);
  }(), 20s);
  CHECK(adapter.count("send") == 1);
}

TEST_CASE("a reclaimed inbound entry whose turn already finished is acknowledged without running again", "[bus][inbound]") {
  bus_fixture f;
  int runs = 0;
  run_coro(f.io, [&]() -> asio::awaitable<void> {
    co_await f.bus->ensure_group("sg:stream:inbound", "sg:workers");
    auto id = co_await f.bus->publish_inbound(f.inbound("c", "done already"));
    // A worker finished the turn and died before its XACK went out.
    co_await f.conn.command("XREADGROUP", "GROUP", "sg:workers", "dead-worker", "COUNT", 1, "STREAMS",
                            "sg:stream:inbound", ">");
    co_await f.conn.command("ZADD", order_key("sg:stream:inbound", "redis:c"), "1", "done");  // its order mark
    inbound_consumer_settings s;
    s.consumer.autoclaim_min_idle = 0ms;
    inbound_consumer worker(f.conn, f.settings, *f.bus, "w", [&](const turn&) -> asio::awaitable<outcome> {
      ++runs;
      co_return outcome::ack();
    }, s);
    co_await worker.start();
    CHECK(co_await eventually([&] {
      return f.server.cli({"XPENDING", "sg:stream:inbound", "sg:workers"}).rfind("0", 0) == 0;
    }));
    co_await worker.stop(1s);
  }(), 20s);
  CHECK(runs == 0);
}
