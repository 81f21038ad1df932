// A long run at a steady rate through the REST API, to show that nothing grows once every
// cap is reached: redis-server, one `stargazer --role=gateway` and one `--role=worker`
// (echo model) as processes; this process creates N Redis-platform instances and sends
// `POST .../messages?wait=true` round-robin over them on a fixed schedule, over keep-alive
// connections. After a warm-up it samples the processes' RSS, Redis's used_memory and its
// key count, and prints how far each moved over the measurement window.

#include "bench.hpp"
#include "bench_support.hpp"

#include "stargazer/bus/lock.hpp"
#include "stargazer/bus/outbound_consumer.hpp"
#include "stargazer/http/client.hpp"
#include "stargazer/platform/redis/redis_platform.hpp"
#include "stargazer/redis/connection.hpp"
#include "stargazer/redis/scan.hpp"

#include "child_process.hpp"
#include "raw_http.hpp"
#include "redis_server.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>
#include <rapidjson/document.h>

#include <csignal>

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <utility>

namespace stargazer::bench {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr std::string_view admin_key = "soak-admin";
constexpr std::size_t text_bytes = 100;  // as the capacity figure in docs/operations.md

clock_type::duration seconds(double s) {
  return std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(s));
}

struct instance {
  std::string id;
  std::string key;
};

struct interval_counts {
  std::size_t sent = 0, ok = 0, failed = 0;
  std::vector<double> latency_ms;  // of the ok ones, from the scheduled send time
  std::string last_failure;
};

struct sample {
  double gateway_rss_mb = 0, worker_rss_mb = 0, redis_rss_mb = 0;
  double used_memory = 0, keys = 0;
};

// "soak#<n>#": the echo model sends the text back, so the tag tells which message a reply answers.
std::string tag_of(std::size_t n) { return fmt::format("soak#{}#", n); }

std::string message_text(std::size_t n) {
  auto text = tag_of(n);
  text.resize(std::max(text.size(), text_bytes), '.');
  return text;
}

std::uint64_t info_number(const std::string& info, std::string_view field) {
  std::istringstream in(info);
  for (std::string line; std::getline(in, line);)
    if (line.starts_with(field) && line.size() > field.size() && line[field.size()] == ':')
      return std::stoull(line.substr(field.size() + 1));
  return 0;
}

asio::awaitable<sample> take_sample(redis::connection& conn, pid_t gateway, pid_t worker, pid_t redis) {
  redis::request req;
  req.push("INFO", "memory").push("DBSIZE");
  auto r = co_await conn.exec(std::move(req));
  if (!r || r->size() != 2 || !(*r)[0].is_bulk()) throw std::runtime_error("INFO memory / DBSIZE failed");
  co_return sample{usage_of(gateway).rss_mb, usage_of(worker).rss_mb, usage_of(redis).rss_mb,
                   static_cast<double>(info_number((*r)[0].str(), "used_memory")),
                   static_cast<double>((*r)[1].integer())};
}

http::request post(const std::string& target, const std::string& key, std::string body) {
  http::request r;
  r.verb = http::method::post;
  r.target = target;
  r.headers = {{"authorization", "Bearer " + key}, {"content-type", "application/json"}};
  r.body = std::move(body);
  return r;
}

bool replied_with(const std::string& body, const std::string& tag) {
  rapidjson::Document d;
  d.Parse(body.data(), body.size());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("responses") || !d["responses"].IsArray()) return false;
  for (const auto& event : d["responses"].GetArray())
    if (event.IsObject() && event.HasMember("text") && event["text"].IsString() &&
        std::string_view(event["text"].GetString()).find(tag) != std::string_view::npos)
      return true;
  return false;
}

// The event stream cap is a constant (redis_platform::events_maxlen, no flag) that one
// entry per turn reaches only after events_maxlen turns per instance: ~28 minutes at
// 300/s over 1,000 instances. So it is filled up front with entries shaped like a turn's
// (a message event of the same text and its turn_complete), XADDed as the gateway does.
asio::awaitable<void> prefill_event_streams(redis::connection& conn, const std::vector<instance>& instances) {
  const auto when = platform::iso_time(platform::now_unix());
  const auto nonce = bus::random_hex_id();
  const auto message = fmt::format(R"({{"type":"message","id":"{}","text":"{}","timestamp":"{}","nonce":"{}"}})",
                                   bus::random_hex_id(), message_text(0), when, nonce);
  const auto complete = fmt::format(R"({{"type":"turn_complete","nonce":"{}","timestamp":"{}"}})", nonce, when);
  constexpr auto cap = platform::redis_platform::events_maxlen;
  for (const auto& i : instances) {
    const auto stream = platform::events_stream(i.id);
    redis::request req;
    for (std::size_t n = 0; n < cap; ++n)
      req.push("XADD", stream, "MAXLEN", "~", cap, "*", "event", message, "turn_complete", complete);
    req.push("EXPIRE", stream, platform::redis_platform::message_ttl.count());
    if (auto r = co_await conn.exec(std::move(req)); !r) throw std::runtime_error("prefill: " + r.error().message());
  }
}

// Keys by kind (their first two ':' segments), each kind's memory estimated as its count
// times the mean MEMORY USAGE of up to 50 of its keys.
struct key_kind {
  std::size_t count = 0;
  double bytes = 0;
};

asio::awaitable<std::map<std::string, key_kind>> keys_by_kind(redis::connection& conn) {
  auto keys = co_await redis::scan_keys(conn, "*");
  if (!keys) throw std::runtime_error("SCAN failed");
  std::map<std::string, std::vector<std::string>> grouped;
  for (auto& k : *keys) {
    const auto first = k.find(':');
    grouped[k.substr(0, first == std::string::npos ? first : k.find(':', first + 1))].push_back(std::move(k));
  }
  std::map<std::string, key_kind> kinds;
  for (const auto& [kind, members] : grouped) {
    const auto sampled = std::min<std::size_t>(members.size(), 50);
    redis::request req;
    for (std::size_t n = 0; n < sampled; ++n)
      req.push("MEMORY", "USAGE", members[n * members.size() / sampled], "SAMPLES", 0);
    auto r = co_await conn.exec(std::move(req));
    double total = 0;
    if (r)
      for (const auto& one : *r) total += one.is_integer() ? static_cast<double>(one.integer()) : 0;
    kinds[kind] = {members.size(), total / static_cast<double>(sampled) * static_cast<double>(members.size())};
  }
  co_return kinds;
}

void print_flatness(std::string_view name, const std::vector<sample>& window, double sample::*field, double scale) {
  std::vector<double> v;
  for (const auto& s : window) v.push_back(s.*field / scale);
  const auto [min, max] = std::minmax_element(v.begin(), v.end());
  const double first = v.front(), deviation = std::max(*max - first, first - *min) / first * 100;
  fmt::print("  {:<18} first {:>10.1f}  last {:>10.1f}  min {:>10.1f}  max {:>10.1f}  spread {:5.1f} %  {}\n", name,
             first, v.back(), *min, *max, (*max - *min) / first * 100,
             deviation <= 10 ? "PASS (every sample within ±10 % of the first)"
                             : fmt::format("FAIL ({:.1f} % from the first)", deviation));
}

int run_soak(const args& a) {
  const auto channels = static_cast<std::size_t>(std::stoul(option(a, "--channels", "1000")));
  const double rate = std::stod(option(a, "--rate", "300"));
  const double warmup_s = std::stod(option(a, "--warmup-minutes", "6")) * 60;
  const double window_s = std::stod(option(a, "--minutes", "30")) * 60;
  const double sample_s = std::stod(option(a, "--sample-seconds", "60"));
  const int history_keep = std::stoi(option(a, "--history-keep", "50"));
  // Streams are trimmed whether or not their entries were read: 10,000 entries are 33 s of
  // backlog at 300/s (the floor, 1,000, would be 3 s), and are reached within the warm-up.
  const auto stream_maxlen = std::stoul(option(a, "--stream-maxlen", "10000"));
  const bool prefill = option(a, "--prefill-events", "yes") != "no";
  const std::string binary = option(a, "--binary", STARGAZER_BINARY);
  if (channels == 0 || rate <= 0 || warmup_s < 0 || window_s <= 0 || sample_s <= 0 || history_keep < 1 ||
      stream_maxlen == 0) {
    fmt::print(stderr, "soak: --channels, --rate, --minutes, --sample-seconds, --history-keep, --stream-maxlen "
                       "must be positive\n");
    return 2;
  }

  // What bounds Redis under this traffic, and when each bound is reached:
  // - sg:msg:* hashes, channel_msgs:* indexes: --history-keep per channel (a turn stores the
  //   user's message and the reply), given to both processes, as each applies its own;
  // - sg:stream:* (inbound, outbound, dead letters): --stream-maxlen (floored at 1000);
  // - sg:outbound:claim:* keys, where the gateway claims a reply before sending it (not
  //   the Redis platform once it delivers atomically): claim_ttl (300 s, no flag) each;
  // - redis_platform:events:* streams: events_maxlen per instance (prefilled, see above);
  // - redis_platform:message_ids:* zsets: 2 x --history-keep user message ids per instance.
  const double turns_per_channel_s = rate / static_cast<double>(channels);
  const double history_fill_s = 2.0 * history_keep / turns_per_channel_s;  // the id sets fill last
  const double events_fill_s = prefill ? 0 : platform::redis_platform::events_maxlen / turns_per_channel_s;
  const double streams_fill_s = static_cast<double>(std::max<std::size_t>(stream_maxlen, 1000)) / rate;  // 1 entry/turn
  const double slowest_fill_s = std::max({history_fill_s, events_fill_s, streams_fill_s});
  const std::vector<std::string> caps{fmt::format("--history-keep={}", history_keep),
                                      fmt::format("--stream-maxlen={}", stream_maxlen)};

  test::redis_server server;
  const std::vector<std::string> env{"SG_REDIS_URL=" + server.unix_url(), "SG_LOG_LEVEL=warn",
                                     "SG_ADMIN_API_KEY=" + std::string(admin_key)};
  const auto port = test::free_port();
  // One client address stands for every user here: no per-address connection cap.
  std::vector<std::string> gateway_argv{binary, "--role=gateway", "--node-id=soak-gateway",
                                        fmt::format("--http-port={}", port), "--webchat-enabled=false",
                                        "--http-max-connections-per-ip=0"};
  std::vector<std::string> worker_argv{binary, "--role=worker", "--node-id=soak-worker", "--llm-provider=echo"};
  gateway_argv.insert(gateway_argv.end(), caps.begin(), caps.end());
  worker_argv.insert(worker_argv.end(), caps.begin(), caps.end());
  test::child_process gateway(gateway_argv, env), worker(worker_argv, env);
  if (!test::wait_for_http(port, 30s, "/readyz")) {
    fmt::print(stderr, "soak: the gateway did not become ready:\n{}\n", gateway.output());
    return 1;
  }

  asio::io_context io(1);
  auto redis_settings = redis::settings_from_url(server.unix_url());
  redis_settings.client_name = "soak-stats";
  redis_settings.command_timeout = 60s;  // a prefill request carries 1,000 XADDs
  redis::connection stats(io.get_executor(), redis_settings);
  http::client_settings client_settings;
  client_settings.response_timeout = 15s;  // the request's own wait is 10 s
  client_settings.max_idle_connections = 64;
  http::client api(io.get_executor(), *http::parse_base_url(fmt::format("http://127.0.0.1:{}", port)),
                   client_settings);

  int status = 0;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    stats.start();
    if (!co_await stats.wait_connected(5s)) throw std::runtime_error("cannot connect to " + server.unix_url());
    std::vector<instance> instances;
    for (std::size_t c = 0; c < channels; ++c) {
      auto r = co_await api.send(post("/redis-platform/instances", std::string(admin_key), "{}"));
      rapidjson::Document d;
      if (r) d.Parse(r->body.c_str());
      if (!r || r->status != 201 || d.HasParseError() || !d.IsObject() || !d.HasMember("api_key"))
        throw std::runtime_error(r ? fmt::format("creating an instance: HTTP {} {}", r->status, r->body)
                                   : "creating an instance: " + r.error().message());
      instances.push_back({d["instance_id"].GetString(), d["api_key"].GetString()});
    }
    const auto before_messages = co_await take_sample(stats, gateway.pid(), worker.pid(), server.pid());
    const auto prefill_start = clock_type::now();
    if (prefill) co_await prefill_event_streams(stats, instances);
    const std::chrono::duration<double> prefill_time = clock_type::now() - prefill_start;

    fmt::print("soak: {} instances, {:.0f} messages/s of {} bytes (wait=true, echo model), history-keep {}, "
               "stream-maxlen {}, event streams {}\n", channels, rate, text_bytes, history_keep, stream_maxlen,
               prefill ? fmt::format("prefilled to their cap in {:.1f} s", prefill_time.count()) : "not prefilled");
    fmt::print("  before any message: Redis used_memory {:.1f} MB, {} keys; the slowest bound is reached after "
               "~{:.0f} s, warm-up {:.0f} s{}\n", before_messages.used_memory / 1e6, before_messages.keys,
               slowest_fill_s, warmup_s, warmup_s < slowest_fill_s ? " (SHORTER: expect growth in the window)" : "");
    fmt::print("  {:>7} {:>7} {:>6} {:>6} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}\n", "t (s)", "sent", "ok",
               "failed", "msg/s", "p50 ms", "p99 ms", "gw MB", "wk MB", "redis MB", "used MB", "keys");

    const auto start = clock_type::now();
    const auto end = start + seconds(warmup_s + window_s);
    interval_counts interval;
    std::size_t in_flight = 0;
    bool pacing_done = false;
    // A fixed schedule: message n is due at start + n / rate and its latency counts from
    // then, so a pacer that falls behind shows in the figures.
    asio::co_spawn(io, [&]() -> asio::awaitable<void> {
      asio::steady_timer pacer(io);
      for (std::size_t n = 0;; ++n) {
        const auto due = start + seconds(static_cast<double>(n) / rate);
        if (due >= end) break;
        pacer.expires_at(due);
        boost::system::error_code ec;
        co_await pacer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        ++interval.sent;
        ++in_flight;
        asio::co_spawn(io, [&, n, due]() -> asio::awaitable<void> {
          const auto& to = instances[n % instances.size()];
          auto r = co_await api.send(
              post("/redis-platform/instances/" + to.id + "/messages?wait=true&timeout=10", to.key,
                   fmt::format(R"({{"text":"{}","user_id":"soak-user","user_name":"Soak"}})", message_text(n))));
          if (r && r->status == 200 && replied_with(r->body, tag_of(n))) {
            ++interval.ok;
            interval.latency_ms.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - due).count());
          } else {
            ++interval.failed;
            interval.last_failure =
                r ? fmt::format("HTTP {} {}", r->status, r->body.substr(0, 200)) : r.error().message();
          }
          --in_flight;
        }, asio::detached);
      }
      pacing_done = true;
    }, asio::detached);

    // Sampled every sample_s through the warm-up, then from the window's start to its end.
    std::vector<double> at;
    for (int k = 1; k * sample_s < warmup_s - 0.5; ++k) at.push_back(k * sample_s);
    for (int k = 0; k * sample_s < window_s - 0.5; ++k) at.push_back(warmup_s + k * sample_s);
    at.push_back(warmup_s + window_s);
    std::vector<sample> window;
    interval_counts window_counts;
    std::map<std::string, key_kind> kinds_at_start;
    double previous_t = 0;
    for (const double t : at) {
      co_await sleep_for(start + seconds(t) - clock_type::now());
      const auto s = co_await take_sample(stats, gateway.pid(), worker.pid(), server.pid());
      auto done = std::exchange(interval, {});  // replies from now on count in the next interval
      std::sort(done.latency_ms.begin(), done.latency_ms.end());
      const bool measuring = t >= warmup_s;
      fmt::print("  {:>7.0f} {:>7} {:>6} {:>6} {:>6.0f} {:>7.1f} {:>7.1f} {:>8.1f} {:>8.1f} {:>8.1f} {:>8.1f} {:>8}{}\n",
                 t, done.sent, done.ok, done.failed,
                 t > previous_t ? static_cast<double>(done.sent) / (t - previous_t) : 0.0,
                 percentile(done.latency_ms, 0.5), percentile(done.latency_ms, 0.99), s.gateway_rss_mb,
                 s.worker_rss_mb, s.redis_rss_mb, s.used_memory / 1e6, s.keys, measuring ? "" : "  warm-up");
      if (done.failed > 0) fmt::print("          last failure: {}\n", done.last_failure);
      std::fflush(stdout);
      previous_t = t;
      if (!measuring) continue;
      if (!window.empty()) {  // the interval before the window's first sample was warm-up traffic
        window_counts.sent += done.sent, window_counts.ok += done.ok, window_counts.failed += done.failed;
        window_counts.latency_ms.insert(window_counts.latency_ms.end(), done.latency_ms.begin(),
                                        done.latency_ms.end());
      }
      window.push_back(s);
      if (window.size() != 1) continue;
      kinds_at_start = co_await keys_by_kind(stats);
      const auto claim_ttl = static_cast<double>(bus::outbound_consumer_settings{}.claim_ttl.count());
      const auto claims = co_await redis::scan_keys(stats, "sg:outbound:claim:*");
      if (claims && !claims->empty() && warmup_s < claim_ttl)
        fmt::print("          note: the gateway writes sg:outbound:claim:* keys, which live {:.0f} s: they grow "
                   "through the window's first {:.0f} s (--warmup-minutes {:.0f} avoids it)\n",
                   claim_ttl, claim_ttl - warmup_s, std::ceil(claim_ttl / 60 + 1));
    }
    const auto drain_until = clock_type::now() + 20s;
    while ((!pacing_done || in_flight > 0) && clock_type::now() < drain_until) co_await sleep_for(50ms);

    auto& latency = window_counts.latency_ms;
    std::sort(latency.begin(), latency.end());
    fmt::print("\n  measurement window, {:.1f} min: sent {}, ok {}, failed {}; latency p50 {:.1f} ms, p99 {:.1f} ms\n",
               window_s / 60, window_counts.sent, window_counts.ok, window_counts.failed, percentile(latency, 0.5),
               percentile(latency, 0.99));
    print_flatness("gateway RSS MB", window, &sample::gateway_rss_mb, 1);
    print_flatness("worker RSS MB", window, &sample::worker_rss_mb, 1);
    print_flatness("redis used MB", window, &sample::used_memory, 1e6);
    print_flatness("redis RSS MB", window, &sample::redis_rss_mb, 1);
    print_flatness("redis keys", window, &sample::keys, 1);

    const auto messages = co_await redis::scan_keys(stats, "sg:msg:*");
    if (!messages) throw std::runtime_error("SCAN sg:msg:* failed");
    auto kinds = co_await keys_by_kind(stats);
    const double retained = static_cast<double>(messages->size());
    fmt::print("  message hashes retained (SCAN sg:msg:*): {} (channels x history-keep = {})\n", messages->size(),
               channels * static_cast<std::size_t>(history_keep));
    if (retained > 0) {
      fmt::print("  bytes per retained message: {:.0f} (used_memory at the end - before any message, "
                 "over the hashes)\n", (window.back().used_memory - before_messages.used_memory) / retained);
      // Comparable to the capacity figure in docs/operations.md.
      fmt::print("    of which the history (sg:msg hashes + channel_msgs indexes): {:.0f}\n",
                 (kinds["sg:msg"].bytes + kinds["channel_msgs:redis"].bytes) / retained);
    }
    fmt::print("  keys by kind, window start -> end (MB: count x mean MEMORY USAGE of up to 50 keys):\n");
    for (const auto& entry : kinds_at_start) kinds.try_emplace(entry.first);
    for (const auto& [kind, now] : kinds) {
      const auto& was = kinds_at_start[kind];
      fmt::print("    {:<30} {:>8} -> {:>8} keys  {:>8.1f} -> {:>8.1f} MB\n", kind, was.count, now.count,
                 was.bytes / 1e6, now.bytes / 1e6);
    }
    api.close_idle();
    stats.stop();
  }, [&](std::exception_ptr ex) {
    if (ex) {
      try {
        std::rethrow_exception(ex);
      } catch (const std::exception& e) {
        fmt::print(stderr, "soak: {}\n", e.what());
      }
      status = 1;
    }
    io.stop();  // what is still pending (a request past the drain, idle timers) does not matter now
  });
  io.run();

  gateway.signal(SIGTERM);
  worker.signal(SIGTERM);
  for (auto* p : {&gateway, &worker})
    if (const auto code = p->wait(15s); code != 0)
      fmt::print("  pid {} did not exit cleanly ({}):\n{}\n", p->pid(), code ? std::to_string(*code) : "still running",
                 p->output());
  return status;
}

}  // namespace

int soak(const args& a) {
  try {  // caught here, so the destructors stop the child processes
    return run_soak(a);
  } catch (const std::exception& e) {
    fmt::print(stderr, "soak: {}\n", e.what());
    return 1;
  }
}

}  // namespace stargazer::bench
