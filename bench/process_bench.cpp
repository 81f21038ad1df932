// The bus end to end with the real roles as separate processes: redis-server, one
// `stargazer --role=gateway` and W `--role=worker` (the message processor with the
// offline echo model, optionally delayed). This process publishes inbound envelopes for
// the Redis platform straight onto the inbound stream (the bus level: no HTTP) and
// listens to the Redis platform's response Pub/Sub channels, where the gateway publishes
// each reply as it delivers it.
//
// Prints messages/s, latency publish -> delivery (p50/p95/p99), duplicates and order
// violations, Redis commands per message, and CPU seconds per 1,000 messages, idle and
// peak RSS of every process.

#include "bench.hpp"
#include "bench_support.hpp"

#include "stargazer/bus/envelope.hpp"
#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/lock.hpp"
#include "stargazer/core/config.hpp"
#include "stargazer/platform/redis/redis_platform.hpp"
#include "stargazer/redis/connection.hpp"
#include "stargazer/redis/subscriber.hpp"

#include "child_process.hpp"
#include "redis_server.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>
#include <rapidjson/document.h>

#include <csignal>

#include <algorithm>
#include <charconv>
#include <memory>
#include <unordered_map>

namespace stargazer::bench {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr std::string_view measured_tag = "bench-m";
constexpr std::string_view warmup_tag = "bench-w";

struct delivery_log {
  std::size_t messages = 0;
  std::vector<clock_type::time_point> published;
  std::vector<clock_type::time_point> delivered;
  std::vector<std::uint32_t> replies;  // >1: duplicate
  std::unordered_map<std::string, long> last_index;
  std::size_t delivered_count = 0;
  std::size_t warmup_delivered = 0;
  std::size_t duplicates = 0;
  std::size_t order_violations = 0;
  std::size_t unexpected = 0;
  std::size_t publish_failures = 0;
  clock_type::time_point last_delivery;

  // A gateway's response event: {"type":"message","text":"...bench-m<index>...",...}.
  void on_event(const std::string& channel, const std::string& payload) {
    const auto now = clock_type::now();
    rapidjson::Document d;
    d.Parse(payload.data(), payload.size());
    if (d.HasParseError() || !d.IsObject() || !d.HasMember("type") || !d["type"].IsString()) return ++unexpected, void();
    if (std::string_view(d["type"].GetString()) != "message") return;  // turn_complete etc.
    if (!d.HasMember("text") || !d["text"].IsString()) return ++unexpected, void();
    const std::string_view text(d["text"].GetString(), d["text"].GetStringLength());
    if (text.find(warmup_tag) != std::string_view::npos) return ++warmup_delivered, void();
    const auto at = text.rfind(measured_tag);
    long index = -1;
    if (at != std::string_view::npos)
      std::from_chars(text.data() + at + measured_tag.size(), text.data() + text.size(), index);
    if (index < 0 || static_cast<std::size_t>(index) >= messages) return ++unexpected, void();
    const auto i = static_cast<std::size_t>(index);
    if (replies[i]++ > 0) return ++duplicates, void();
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

struct role_process {
  std::string name;
  std::unique_ptr<test::child_process> process;
  process_usage idle;
  process_usage before;
  process_usage after;
};

}  // namespace

int processes(const args& a) {
  const int workers = std::stoi(option(a, "--workers", "1"));
  const auto messages = static_cast<std::size_t>(std::stoul(option(a, "--messages", "20000")));
  const auto channels = static_cast<std::size_t>(std::stoul(option(a, "--channels", "1000")));
  const auto warmup = static_cast<std::size_t>(std::stoul(option(a, "--warmup", "500")));
  const int delay_ms = std::stoi(option(a, "--delay-ms", "0"));
  const double paced = std::stod(option(a, "--paced", "0"));
  const auto publishers = static_cast<std::size_t>(
      std::stoul(option(a, "--publishers", std::to_string(std::min<std::size_t>(channels, 64)))));
  const std::string binary = option(a, "--binary", STARGAZER_BINARY);
  const bool tcp = std::find(a.begin(), a.end(), "--tcp") != a.end();
  if (workers < 1 || messages == 0 || channels == 0 || publishers == 0 || delay_ms < 0) {
    fmt::print(stderr, "processes: --workers, --messages, --channels, --publishers must be positive\n");
    return 2;
  }

  test::redis_server server;
  const auto url = tcp ? server.url() : server.unix_url();
  const std::vector<std::string> env{"SG_REDIS_URL=" + url, "SG_LOG_LEVEL=warn", "SG_ADMIN_API_KEY=bench-admin"};
  std::vector<role_process> roles;
  roles.push_back({"gateway", std::make_unique<test::child_process>(
                                  std::vector<std::string>{binary, "--role=gateway", "--node-id=bench-gateway",
                                                           "--http-port=" + std::to_string(test::free_port()),
                                                           "--webchat-enabled=false"},
                                  env)});
  for (int w = 1; w <= workers; ++w)
    roles.push_back({fmt::format("worker {}", w),
                     std::make_unique<test::child_process>(
                         std::vector<std::string>{binary, "--role=worker", fmt::format("--node-id=bench-w{}", w),
                                                  "--llm-provider=echo",
                                                  fmt::format("--llm-echo-delay-ms={}", delay_ms)},
                         env)});

  std::vector<std::string> channel_names;
  for (std::size_t c = 0; c < channels; ++c) channel_names.push_back("bench-" + std::to_string(c));
  delivery_log log;
  log.messages = messages;
  log.published.resize(messages);
  log.delivered.resize(messages);
  log.replies.assign(messages, 0);

  asio::io_context io(1);
  auto base = redis::settings_from_url(url);
  base.client_name = "bench-publisher";
  redis::connection conn(io.get_executor(), base);
  auto stats_settings = base;
  stats_settings.client_name = "bench-stats";
  stats_settings.health_check_interval = 0ms;
  redis::connection stats(io.get_executor(), stats_settings);
  bus::event_bus_settings bus_settings;
  bus_settings.stream_maxlen = std::max<std::uint64_t>(bus_settings.stream_maxlen, 4 * (messages + warmup));
  bus::event_bus bus(conn, bus_settings);
  redis::subscriber events(io.get_executor(), base);
  events.set_handler([&](redis::pubsub_message&& m) {
    const auto prefix = platform::response_channel("");
    log.on_event(m.channel.substr(std::min(prefix.size(), m.channel.size())), m.payload);
  });

  const auto inbound = [&](std::size_t i, std::string_view tag) {
    bus::inbound_envelope e;
    e.platform = "redis";
    e.channel_id = channel_names[i % channels];
    e.user_id = "u" + std::to_string(i % channels);
    e.username = "Bench";
    e.content = fmt::format("{}{}", tag, i);
    e.timestamp = platform::now_unix();
    e.message_id = bus::random_hex_id();
    e.trace_id = bus::random_hex_id();
    e.response_nonce = e.trace_id.substr(0, 16);
    return e;
  };
  const auto sample = [&](process_usage role_process::*field) {
    for (auto& r : roles) r.*field = usage_of(r.process->pid());
  };

  int status = 0;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    conn.start();
    stats.start();
    events.start();
    if (!co_await stats.wait_connected(5s)) throw std::runtime_error("cannot connect to " + url);
    const std::vector<std::string> pattern{platform::response_channel("*")};
    co_await events.psubscribe(pattern);
    const std::vector<std::string> platforms{"redis"};
    co_await bus.ensure_streams(role::gateway, platforms);
    co_await sleep_for(1500ms);  // the roles start, connect and settle: their idle footprint
    sample(&role_process::idle);

    for (std::size_t i = 0; i < warmup; ++i) co_await bus.publish_inbound(inbound(i, warmup_tag));
    auto until = clock_type::now() + 60s;
    while (log.warmup_delivered < warmup && clock_type::now() < until) co_await sleep_for(5ms);
    if (log.warmup_delivered < warmup) throw std::runtime_error("warm-up replies did not arrive within 60 s");
    co_await sleep_for(200ms);

    const auto counters_before = co_await read_counters(stats);
    sample(&role_process::before);
    const auto started = clock_type::now();
    std::size_t publishers_left = 0;
    clock_type::time_point publish_done;
    if (paced > 0) {
      // Latency counts from the scheduled time, so a late pacer shows in the figures.
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
        log.published[i] = due;
        asio::co_spawn(io, [&, i]() -> asio::awaitable<void> {
          if (!co_await bus.publish_inbound(inbound(i, measured_tag))) ++log.publish_failures;
          if (--publishers_left == 0) publish_done = clock_type::now();
        }, asio::detached);
      }
    } else {
      publishers_left = publishers;
      for (std::size_t p = 0; p < publishers; ++p) {
        asio::co_spawn(io, [&, p]() -> asio::awaitable<void> {
          for (std::size_t i = 0; i < messages; ++i) {
            if ((i % channels) % publishers != p) continue;
            log.published[i] = clock_type::now();
            if (!co_await bus.publish_inbound(inbound(i, measured_tag))) ++log.publish_failures;
          }
          if (--publishers_left == 0) publish_done = clock_type::now();
        }, asio::detached);
      }
    }

    const std::function<std::size_t()> delivered = [&] { return log.delivered_count; };
    if (!co_await wait_for_count(delivered, messages, 30s)) status = 1;
    sample(&role_process::after);
    const auto counters_after = co_await read_counters(stats);
    co_await sleep_for(300ms);  // late duplicates would show now

    const auto end = log.delivered_count > 0 ? log.last_delivery : clock_type::now();
    const double secs = std::chrono::duration<double>(end - started).count();
    std::vector<double> lat;
    for (std::size_t i = 0; i < messages; ++i)
      if (log.replies[i] > 0)
        lat.push_back(std::chrono::duration<double, std::milli>(log.delivered[i] - log.published[i]).count());
    std::sort(lat.begin(), lat.end());
    std::uint64_t commands = 0;
    std::vector<std::pair<std::uint64_t, std::string>> by_count;
    for (const auto& [name, n] : counters_after.calls) {
      const auto delta = n - (counters_before.calls.contains(name) ? counters_before.calls.at(name) : 0);
      if (name == "info" || delta == 0) continue;
      commands += delta;
      by_count.emplace_back(delta, name);
    }
    std::sort(by_count.rbegin(), by_count.rend());
    std::string breakdown;
    for (const auto& [n, name] : by_count)
      breakdown += fmt::format(" {} {:.2f}", name, static_cast<double>(n) / static_cast<double>(messages));
    // Where redis-server's CPU goes: time inside each command (a script's own commands are
    // inside its evalsha time too); the rest is reading, parsing, replying and the event loop.
    std::vector<std::pair<std::uint64_t, std::string>> by_time;
    for (const auto& [name, us] : counters_after.usec) {
      const auto delta = us - (counters_before.usec.contains(name) ? counters_before.usec.at(name) : 0);
      if (name == "info" || delta == 0) continue;
      by_time.emplace_back(delta, name);
    }
    std::sort(by_time.rbegin(), by_time.rend());
    std::string time_breakdown;
    for (const auto& [us, name] : by_time)
      time_breakdown += fmt::format(" {} {:.1f}", name, static_cast<double>(us) / static_cast<double>(messages));

    fmt::print("processes: bus level -> {} worker process(es) (echo model, delay {} ms) -> gateway process -> "
               "Redis platform response events\n", workers, delay_ms);
    fmt::print("  redis-server on {}; {} messages over {} channels, {}\n", tcp ? "TCP" : "a unix socket", messages,
               channels,
               paced > 0 ? fmt::format("paced at {:.0f} msg/s (latency from the scheduled time)", paced)
                         : fmt::format("as fast as possible ({} publishers)", publishers));
    fmt::print("  delivered {}/{} in {:.3f} s = {:.0f} messages/s", log.delivered_count, messages, secs,
               static_cast<double>(log.delivered_count) / secs);
    if (publish_done != clock_type::time_point{})
      fmt::print(" (publishing took {:.3f} s)", std::chrono::duration<double>(publish_done - started).count());
    fmt::print("\n  latency publish -> delivered (ms): p50 {:.2f}  p95 {:.2f}  p99 {:.2f}  max {:.2f}\n",
               percentile(lat, 0.50), percentile(lat, 0.95), percentile(lat, 0.99), lat.empty() ? 0.0 : lat.back());
    fmt::print("  duplicates {}, order violations {}, unexpected events {}, publish failures {}\n", log.duplicates,
               log.order_violations, log.unexpected, log.publish_failures);
    const double thousands = static_cast<double>(std::max<std::size_t>(log.delivered_count, 1)) / 1000.0;
    fmt::print("  redis commands per message {:.1f}; redis-server CPU {:.3f} s per 1,000 messages\n",
               static_cast<double>(commands) / static_cast<double>(messages),
               (counters_after.cpu_seconds - counters_before.cpu_seconds) / thousands);
    fmt::print("    per message (commands inside scripts included):{}\n", breakdown);
    fmt::print("    µs per message inside commands (a script's include its own commands):{}\n", time_breakdown);
    for (const auto& r : roles)
      fmt::print("  {:<10} CPU {:.3f} s per 1,000 messages, RSS idle {:.1f} MB, peak {:.1f} MB\n", r.name,
                 (r.after.cpu_seconds - r.before.cpu_seconds) / thousands, r.idle.rss_mb, r.after.peak_rss_mb);
    if (status != 0) fmt::print("  INCOMPLETE: no delivery for 30 s\n");
    if (log.duplicates != 0 || log.order_violations != 0) status = 1;

    events.stop();
    conn.stop();
    stats.stop();
  }, [&](std::exception_ptr ex) {
    if (!ex) return;
    try {
      std::rethrow_exception(ex);
    } catch (const std::exception& e) {
      fmt::print(stderr, "processes: {}\n", e.what());
    }
    status = 1;
    io.stop();
  });
  io.run();

  // Every role must exit cleanly when asked.
  for (auto& r : roles) r.process->signal(SIGTERM);
  for (auto& r : roles) {
    const auto code = r.process->wait(15s);
    if (code != 0) {
      fmt::print("  {} did not exit cleanly: {}\n{}\n", r.name, code ? std::to_string(*code) : "still running",
                 r.process->output());
      status = 1;
    }
  }
  return status;
}

}  // namespace stargazer::bench
