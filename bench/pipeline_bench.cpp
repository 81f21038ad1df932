// The event bus end to end, as one message travels it: publish_inbound → worker
// consumer(s) (stream_consumer + channel_sequencer, a no-op processor that publishes one
// outbound `message` per inbound, then acks) → gateway outbound_consumer (claim, send,
// message-id re-sync, ack) → a recording platform adapter that timestamps each send.
//
// Prints messages/s, end-to-end latency percentiles (publish → adapter send), Redis
// commands per message (INFO commandstats before/after, script-internal calls included)
// and CPU per message of this process and of redis-server. Everything runs in ONE
// process on ONE single-threaded io_context: the bench's own CPU (publisher, workers
// and gateway together) is part of what is measured.

#include "bench.hpp"
#include "bench_support.hpp"

#include "stargazer/bus/channel_sequencer.hpp"
#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/lock.hpp"
#include "stargazer/bus/outbound_consumer.hpp"
#include "stargazer/platform/dispatcher.hpp"
#include "stargazer/bus/stream_consumer.hpp"
#include "stargazer/core/config.hpp"
#include "stargazer/platform/platform_adapter.hpp"
#include "stargazer/redis/connection.hpp"

#include "redis_server.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <sys/resource.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <memory>
#include <sstream>
#include <unordered_map>

namespace stargazer::bench {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

// What the run observed, shared by the publishers and the adapter.
struct run_state {
  std::size_t messages = 0;
  std::vector<clock_type::time_point> published;  // the latency's start (see --paced)
  std::vector<clock_type::time_point> delivered;  // first send of each message
  std::vector<std::uint32_t> sends;               // sends per message (>1: duplicate)
  std::unordered_map<std::string, long> last_index;  // per channel, for the order check
  std::size_t delivered_count = 0;
  std::size_t duplicates = 0;
  std::size_t order_violations = 0;
  std::size_t warmup_delivered = 0;
  std::size_t unexpected = 0;  // sends the benchmark did not publish
  std::size_t publish_failures = 0;
  clock_type::time_point last_delivery;

  void on_send(const std::string& channel, const std::string& text) {
    const auto now = clock_type::now();
    long index = -1;
    if (text.size() > 1) std::from_chars(text.data() + 1, text.data() + text.size(), index);
    if (text.starts_with('w')) {
      ++warmup_delivered;
      return;
    }
    if (!text.starts_with('m') || index < 0 || static_cast<std::size_t>(index) >= messages) {
      ++unexpected;
      return;
    }
    const auto i = static_cast<std::size_t>(index);
    if (sends[i]++ > 0) {
      ++duplicates;
      return;
    }
    delivered[i] = now;
    last_delivery = now;
    ++delivered_count;
    auto [it, fresh] = last_index.try_emplace(channel, index);
    if (!fresh) {
      if (index < it->second) ++order_violations;
      else it->second = index;
    }
  }
};

// The gateway's platform: records and timestamps each send, does nothing else.
class timing_adapter final : public platform::platform_adapter {
public:
  explicit timing_adapter(run_state& s) : state_(s) {}

  std::string_view name() const override { return "redis"; }
  platform::task<void> start() override { co_return; }
  platform::task<void> stop() override { co_return; }
  bool is_running() const override { return true; }
  platform::bot_identity identity() const override { return {"bot", "Stargazer"}; }

  platform::task<result<std::string>> send(const std::string& channel_id, const std::string& text,
                                           const platform::send_context&) override {
    state_.on_send(channel_id, text);
    co_return "sent-" + std::to_string(++sent_);
  }
  platform::task<result<std::string>> send_file(const std::string&, const std::string&, const std::string&,
                                                const std::string&, const platform::send_context&) override {
    ++state_.unexpected;
    co_return "sent-" + std::to_string(++sent_);
  }
  platform::task<result<std::string>> send_with_buttons(const std::string&, const std::string&,
                                                        const std::vector<bus::button>&,
                                                        const platform::send_context&) override {
    ++state_.unexpected;
    co_return "sent-" + std::to_string(++sent_);
  }
  platform::task<void> start_typing(const std::string&) override { co_return; }
  platform::task<void> stop_typing(const std::string&) override { co_return; }
  platform::task<bool> add_reaction(const std::string&, const std::string&, const std::string&) override {
    co_return false;
  }
  platform::task<void> set_presence(const std::string&, const std::string&) override { co_return; }
  platform::task<std::vector<platform::history_message>> fetch_history(const std::string&, int) override {
    co_return std::vector<platform::history_message>{};
  }
  platform::task<bool> is_channel_valid(const std::string&) override { co_return true; }
  platform::task<bool> should_skip_channel_heartbeat(const std::string&) override { co_return true; }

private:
  run_state& state_;
  std::uint64_t sent_ = 0;
};

// One worker as it would run in its own process: its own command connection, event bus
// and sequencer; the consumer opens its own blocking connection.
struct worker_node {
  std::unique_ptr<redis::connection> conn;
  std::unique_ptr<bus::event_bus> bus;
  std::unique_ptr<bus::channel_sequencer> sequencer;
  std::unique_ptr<bus::stream_consumer> consumer;
};

// Deletes the run's keys from a server the benchmark does not own.
asio::awaitable<void> unlink_matching(redis::connection& conn, const std::string& pattern) {
  std::string cursor = "0";
  do {
    auto r = co_await conn.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000);
    if (!r || !r->is_array() || r->elements().size() < 2) co_return;
    cursor = r->elements()[0].str();
    std::vector<std::string> keys;
    for (auto& k : r->elements()[1].elements()) keys.push_back(k.str());
    if (!keys.empty()) {
      redis::request req;
      req.push_with({"UNLINK"}, keys);
      co_await conn.exec(std::move(req));
    }
  } while (cursor != "0");
}

}  // namespace

int pipeline(const args& a) {
  const auto messages = static_cast<std::size_t>(std::stoul(option(a, "--messages", "20000")));
  const auto channels = static_cast<std::size_t>(std::stoul(option(a, "--channels", "200")));
  const int workers = std::stoi(option(a, "--workers", "1"));
  const double paced = std::stod(option(a, "--paced", "0"));  // messages/s; 0: as fast as possible
  const auto publishers = static_cast<std::size_t>(
      std::stoul(option(a, "--publishers", std::to_string(std::min<std::size_t>(channels, 64)))));
  const auto warmup = static_cast<std::size_t>(std::stoul(option(a, "--warmup", "1000")));
  std::string url = option(a, "--url", "");
  if (messages == 0 || channels == 0 || workers < 1 || publishers == 0) {
    fmt::print(stderr, "pipeline: --messages, --channels, --workers and --publishers must be positive\n");
    return 2;
  }

  std::unique_ptr<test::redis_server> own;
  if (url.empty()) {
    own = std::make_unique<test::redis_server>();
    // --unix: the own server's unix socket, as a standalone deployment uses it.
    url = std::find(a.begin(), a.end(), "--unix") != a.end() ? own->unix_url() : own->url();
  }
  const auto base = redis::settings_from_url(url);
  const auto connection_settings = [&](const std::string& name) {
    auto s = base;
    s.client_name = name;
    s.metrics_name = name;
    return s;
  };

  // On our own server the default names; on a given server, names of this run only
  // (so no earlier entry is consumed), deleted at the end.
  bus::event_bus_settings bus_settings;
  bus_settings.names = bus::topology{};
  std::string channel_prefix = "bench-";
  const std::string run_id = bus::random_hex_id().substr(0, 8);
  if (!own) {
    bus_settings.names.inbound_stream = "sg:bench:" + run_id + ":inbound";
    bus_settings.names.outbound_stream_prefix = "sg:bench:" + run_id + ":outbound";
    channel_prefix = "bench-" + run_id + "-";
  }
  // No trimming of entries the run still needs.
  bus_settings.stream_maxlen = std::max<std::uint64_t>(bus_settings.stream_maxlen, 2 * (messages + warmup));
  const auto& names = bus_settings.names;
  std::vector<std::string> channel_names;
  for (std::size_t c = 0; c < channels; ++c) channel_names.push_back(channel_prefix + std::to_string(c));

  asio::io_context io(1);
  run_state state;
  state.messages = messages;
  state.published.resize(messages);
  state.delivered.resize(messages);
  state.sends.assign(messages, 0);
  timing_adapter adapter(state);

  redis::connection publisher_conn(io.get_executor(), connection_settings("bench-publisher"));
  redis::connection gateway_conn(io.get_executor(), connection_settings("bench-gateway"));
  auto stats_settings = connection_settings("bench-stats");
  stats_settings.health_check_interval = 0ms;  // its own commands stay out of the figures
  redis::connection stats_conn(io.get_executor(), stats_settings);
  bus::event_bus publisher_bus(publisher_conn, bus_settings);
  bus::event_bus gateway_bus(gateway_conn, bus_settings);

  std::vector<worker_node> nodes;
  for (int w = 0; w < workers; ++w) {
    worker_node n;
    n.conn = std::make_unique<redis::connection>(io.get_executor(), connection_settings("bench-worker-" + std::to_string(w)));
    n.bus = std::make_unique<bus::event_bus>(*n.conn, bus_settings);
    n.sequencer = std::make_unique<bus::channel_sequencer>(
        *n.conn, bus::sequencer_settings{.stream = names.inbound_stream, .lock_prefix = "sg:lock:inbound:"});
    bus::consumer_settings cs;
    cs.stream = names.inbound_stream;
    cs.group = names.worker_group;
    cs.consumer = "bench-worker-" + std::to_string(w);
    cs.max_in_flight = 256;
    cs.read_count = 100;
    auto* node_bus = n.bus.get();
    // The no-op processor: one outbound message per inbound, keyed by the inbound entry.
    bus::entry_handler processor = [node_bus](const bus::stream_entry& e,
                                              const bus::delivery&) -> asio::awaitable<bus::outcome> {
      auto decoded = bus::decode_inbound(e.field("data"));
      if (auto* failure = std::get_if<bus::decode_failure>(&decoded)) co_return bus::outcome::dead_letter(failure->reason());
      const auto& in = std::get<bus::inbound_envelope>(decoded);
      bus::outbound_envelope out;
      out.type = bus::outbound_type::message;
      out.channel_id = in.channel_id;
      out.message_key = fmt::format("sg:msg:redis:{}:{}:0", in.channel_id, e.id);
      out.trace_id = in.trace_id;
      out.response_nonce = in.response_nonce;
      out.text = in.content;
      auto r = co_await node_bus->publish_outbound(in.platform, out);
      if (!r) co_return bus::outcome::retry("publish_outbound: " + r.error().message());
      co_return bus::outcome::ack();
    };
    n.consumer = std::make_unique<bus::stream_consumer>(*n.conn, connection_settings(cs.consumer + "-blocking"), cs,
                                                        n.sequencer->wrap(std::move(processor)));
    nodes.push_back(std::move(n));
  }
  bus::outbound_consumer_settings os;
  os.consumer.max_in_flight = 256;
  os.consumer.read_count = 100;
  platform::outbound_dispatcher dispatch(adapter);
  bus::outbound_consumer gateway(gateway_conn, connection_settings("bench-gateway-blocking"), names, "bench-gateway",
                                 dispatch, os);

  const auto inbound = [&](std::size_t i, char tag) {
    bus::inbound_envelope e;
    e.platform = "redis";
    e.channel_id = channel_names[i % channels];
    e.user_id = "u" + std::to_string(i % channels);
    e.username = "bench";
    e.content = tag + std::to_string(i);
    e.trace_id = bus::random_hex_id();
    e.response_nonce = e.trace_id.substr(0, 16);
    return e;
  };
  const auto all_idle = [&] {
    for (auto& n : nodes)
      if (n.consumer->in_flight() != 0) return false;
    return gateway.engine().in_flight() == 0;
  };

  int status = 0;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    const std::vector<redis::connection*> shared_conns{&publisher_conn, &gateway_conn, &stats_conn};
    for (auto* c : shared_conns) c->start();
    for (auto& n : nodes) n.conn->start();
    if (!co_await stats_conn.wait_connected(5s)) throw std::runtime_error("cannot connect to " + url);
    // Named, not a braced argument: `co_await f({"redis"})` in a coroutine lambda trips
    // GCC 12 ("array used as initializer").
    const std::vector<std::string> platforms{"redis"};
    co_await publisher_bus.ensure_streams(role::standalone, platforms);
    co_await gateway.start();
    for (auto& n : nodes) co_await n.consumer->start();

    // Warm-up: connections up, scripts loaded, channels' order state in place.
    for (std::size_t i = 0; i < warmup; ++i) co_await publisher_bus.publish_inbound(inbound(i, 'w'));
    auto until = clock_type::now() + 60s;
    while (state.warmup_delivered < warmup && clock_type::now() < until) co_await sleep_for(5ms);
    while (!all_idle()) co_await sleep_for(5ms);
    co_await sleep_for(50ms);  // acks flushed

    const auto before = co_await read_counters(stats_conn);
    const double cpu_before = self_cpu_seconds();
    const auto started = clock_type::now();
    clock_type::time_point publish_done;
    std::size_t publishers_left = 0;
    clock_type::duration max_lateness{};

    if (paced > 0) {
      // One message per 1/rate s; latency counts from the scheduled time, so a late pacer
      // (a busy event loop) shows up in the figures instead of hiding (coordinated omission).
      const auto period = std::chrono::duration<double>(1.0 / paced);
      asio::steady_timer pacer(io);
      publishers_left = messages;
      for (std::size_t i = 0; i < messages; ++i) {
        const auto due = started + std::chrono::duration_cast<clock_type::duration>(period * static_cast<double>(i));
        if (clock_type::now() < due) {
          pacer.expires_at(due);
          boost::system::error_code ec;
          co_await pacer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        }
        max_lateness = std::max(max_lateness, clock_type::now() - due);
        state.published[i] = due;
        asio::co_spawn(io, [&, i]() -> asio::awaitable<void> {
          auto r = co_await publisher_bus.publish_inbound(inbound(i, 'm'));
          if (!r) ++state.publish_failures;
          if (--publishers_left == 0) publish_done = clock_type::now();
        }, asio::detached);
      }
    } else {
      // `publishers` coroutines, each publishing its share of channels in order, back to back.
      publishers_left = publishers;
      for (std::size_t p = 0; p < publishers; ++p) {
        asio::co_spawn(io, [&, p]() -> asio::awaitable<void> {
          for (std::size_t i = 0; i < messages; ++i) {
            if ((i % channels) % publishers != p) continue;
            state.published[i] = clock_type::now();
            auto r = co_await publisher_bus.publish_inbound(inbound(i, 'm'));
            if (!r) ++state.publish_failures;
          }
          if (--publishers_left == 0) publish_done = clock_type::now();
        }, asio::detached);
      }
    }

    // Wait for every message; give up after 30 s without progress.
    const std::function<std::size_t()> delivered = [&] { return state.delivered_count; };
    if (!co_await wait_for_count(delivered, messages, 30s)) status = 1;
    until = clock_type::now() + 10s;
    while (!all_idle() && clock_type::now() < until) co_await sleep_for(1ms);
    co_await sleep_for(50ms);  // acks flushed
    const auto after = co_await read_counters(stats_conn);
    const double cpu_after = self_cpu_seconds();

    // ---- figures ----------------------------------------------------------------------
    const auto end = state.delivered_count > 0 ? state.last_delivery : clock_type::now();
    const double secs = std::chrono::duration<double>(end - started).count();
    std::vector<double> lat;
    lat.reserve(messages);
    for (std::size_t i = 0; i < messages; ++i)
      if (state.sends[i] > 0) lat.push_back(std::chrono::duration<double, std::milli>(state.delivered[i] - state.published[i]).count());
    std::sort(lat.begin(), lat.end());
    double mean = 0;
    for (double v : lat) mean += v;
    if (!lat.empty()) mean /= static_cast<double>(lat.size());

    std::map<std::string, std::uint64_t> delta;
    for (const auto& [name, n] : after.calls) {
      const auto b = before.calls.contains(name) ? before.calls.at(name) : 0;
      if (name != "info" && n > b) delta[name] = n - b;  // our own INFO stays out
    }
    std::uint64_t total = 0;
    for (const auto& [name, n] : delta) total += n;
    const double per_message = static_cast<double>(total) / static_cast<double>(messages);

    fmt::print("pipeline: publish_inbound -> {} worker consumer(s) -> outbound consumer -> adapter.send\n", workers);
    fmt::print("  all in ONE process on ONE single-threaded io_context (publisher, workers, gateway share a core); "
               "redis {} {}\n", own ? "own redis-server at" : "given", url);
    fmt::print("  {} messages over {} channels, {}, read_count 100, max_in_flight 256\n", messages, channels,
               paced > 0 ? fmt::format("paced at {:.0f} msg/s (latency from the scheduled time)", paced)
                         : fmt::format("as fast as possible ({} publisher coroutines)", publishers));
    fmt::print("  delivered {}/{} in {:.3f} s = {:.0f} messages/s", state.delivered_count, messages, secs,
               static_cast<double>(state.delivered_count) / secs);
    if (publish_done != clock_type::time_point{})
      fmt::print(" (publishing took {:.3f} s)", std::chrono::duration<double>(publish_done - started).count());
    fmt::print("\n");
    if (paced > 0)
      fmt::print("  pacer: max lateness {:.2f} ms\n", std::chrono::duration<double, std::milli>(max_lateness).count());
    fmt::print("  latency publish -> send (ms): p50 {:.2f}  p95 {:.2f}  p99 {:.2f}  max {:.2f}  mean {:.2f}\n",
               percentile(lat, 0.50), percentile(lat, 0.95), percentile(lat, 0.99), lat.empty() ? 0.0 : lat.back(),
               mean);
    fmt::print("  redis commands per message: {:.2f} ({} calls, INFO commandstats delta, commands run inside "
               "scripts included)\n", per_message, total);
    std::vector<std::pair<std::uint64_t, std::string>> by_count;
    for (const auto& [name, n] : delta) by_count.emplace_back(n, name);
    std::sort(by_count.rbegin(), by_count.rend());
    std::string breakdown;
    for (const auto& [n, name] : by_count)
      breakdown += fmt::format(" {} {:.2f}", name, static_cast<double>(n) / static_cast<double>(messages));
    fmt::print("    per message:{}\n", breakdown);
    // Time Redis spent executing, from commandstats usec: top-level commands only (scripts'
    // own calls are inside evalsha's figure), so the rest is parsing, I/O and event loop.
    std::vector<std::pair<double, std::string>> by_time;
    for (const auto& [name, u] : after.usec) {
      const auto b = before.usec.contains(name) ? before.usec.at(name) : 0;
      if (name != "info" && u > b) by_time.emplace_back(static_cast<double>(u - b) / static_cast<double>(messages), name);
    }
    std::sort(by_time.rbegin(), by_time.rend());
    std::string timing;
    for (const auto& [us, name] : by_time)
      if (us >= 0.05) timing += fmt::format(" {} {:.1f}", name, us);
    fmt::print("    redis execution us per message (commandstats usec; evalsha includes the commands its scripts run):{}\n",
               timing);
    fmt::print("  cpu per message: bench process {:.1f} us, redis-server {:.1f} us\n",
               (cpu_after - cpu_before) * 1e6 / static_cast<double>(messages),
               (after.cpu_seconds - before.cpu_seconds) * 1e6 / static_cast<double>(messages));
    fmt::print("  duplicates {}, order violations {}, unexpected sends {}, publish failures {}, order gaps {}\n",
               state.duplicates, state.order_violations, state.unexpected, state.publish_failures,
               [&] {
                 std::uint64_t g = 0;
                 for (auto& n : nodes) g += n.sequencer->gaps();
                 return g;
               }());
    std::string per_worker;
    for (auto& n : nodes) per_worker += fmt::format(" {}", n.consumer->processed());
    fmt::print("  entries processed per worker (warm-up included):{}\n", per_worker);
    if (status != 0) fmt::print("  INCOMPLETE: no delivery for 30 s\n");

    for (auto& n : nodes) co_await n.consumer->stop(2s);
    co_await gateway.stop(2s);
    if (!own) {
      // Leave nothing of this run on a server we do not own.
      const std::vector<std::string> patterns{names.inbound_stream + "*", names.outbound_stream_prefix + "*",
                                              "sg:seq:sg:bench:" + run_id + ":*",
                                              "sg:msg:redis:" + channel_prefix + "*",
                                              "sg:outbound:claim:sg:msg:redis:" + channel_prefix + "*"};
      for (const auto& pattern : patterns) co_await unlink_matching(stats_conn, pattern);
    }
    for (auto* c : shared_conns) c->stop();
    for (auto& n : nodes) n.conn->stop();
  }, [&](std::exception_ptr ex) {
    if (!ex) return;
    try {
      std::rethrow_exception(ex);
    } catch (const std::exception& e) {
      fmt::print(stderr, "pipeline: {}\n", e.what());
    }
    status = 1;
    io.stop();
  });
  io.run();
  return status;
}

}  // namespace stargazer::bench
