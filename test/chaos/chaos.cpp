// Chaos run (issue 9): gateways, several workers and a tools service as separate
// processes of the real binary on a real Redis, messages sent while workers are SIGKILLed
// and restarted every few seconds and a gateway is SIGKILLed once. Per mode: through the
// REST API with Redis restarted once (restart) or its master killed and failed over by
// Sentinel (sentinel); through the Discord test server with gateways sharing the shards
// and one gateway connection dropped (discord); or through the Matrix homeserver test
// server with the syncing one of two gateways killed and one /sync answer dropped
// (matrix). At the end it checks, prints and exits non-zero on any failure: every
// acknowledged message answered exactly once, per-channel order kept, the dead-letter
// streams holding only the deliberately poisoned entries, no pending entries left, every
// process exiting 0 on SIGTERM. docs/chaos.md describes the run.

#include "stargazer/bus/topology.hpp"
#include "stargazer/core/json_value.hpp"

#include "child_process.hpp"
#include "discord_server.hpp"
#include "matrix_server.hpp"
#include "raw_http.hpp"
#include "redis_server.hpp"
#include "sentinel_cluster.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

using namespace stargazer::test;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

struct options {
  std::string binary = STARGAZER_BINARY;
  std::string mode = "restart";           // restart | sentinel | discord | matrix
  std::string redis_restart = "graceful";  // graceful (SIGTERM) | kill (SIGKILL, appendfsync always)
  int messages = 600;
  int channels = 20;
  int workers = 3;
  int gateways = 2;                    // discord and matrix modes: gateway processes of the one bot
  int shards = 4;                      // discord mode
  int rate = 20;                       // messages per second, all senders together
  int senders = 4;                     // sending threads; a channel belongs to one
  int kill_interval_ms = 2000;         // a random worker is SIGKILLed and restarted this often
  int echo_delay_ms = 300;             // model latency: kills catch turns in the middle
  int poison = 3;                      // undecodable entries XADDed straight onto the inbound stream
  int drain_seconds = 120;             // how long replies may take after the last send
  int shutdown_timeout = 10;           // --shutdown-timeout of every process
  unsigned seed = 0;                   // 0: from the clock
  std::string log_dir;                 // empty: a temporary directory, removed when the run passes
  std::string log_level = "info";      // of every process (debug logs each turn's states)
};

[[noreturn]] void usage(const std::string& problem) {
  std::fprintf(stderr,
               "stargazer_chaos: %s\n"
               "usage: stargazer_chaos [--binary PATH] [--mode restart|sentinel|discord|matrix]\n"
               "  [--redis-restart graceful|kill] [--messages N] [--channels N] [--workers N] [--gateways N]\n"
               "  [--shards N] [--rate N] [--senders N] [--kill-interval-ms N] [--echo-delay-ms N] [--poison N]\n"
               "  [--drain-seconds N] [--shutdown-timeout N] [--seed N] [--log-dir DIR] [--log-level LEVEL]\n",
               problem.c_str());
  std::exit(2);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) usage("missing value for " + flag);
    const std::string value = argv[++i];
    const auto number = [&] {
      try {
        return std::stoi(value);
      } catch (const std::exception&) {
        usage("not a number for " + flag + ": " + value);
      }
    };
    if (flag == "--binary") o.binary = value;
    else if (flag == "--mode") o.mode = value;
    else if (flag == "--redis-restart") o.redis_restart = value;
    else if (flag == "--messages") o.messages = number();
    else if (flag == "--channels") o.channels = number();
    else if (flag == "--workers") o.workers = number();
    else if (flag == "--gateways") o.gateways = number();
    else if (flag == "--shards") o.shards = number();
    else if (flag == "--rate") o.rate = number();
    else if (flag == "--senders") o.senders = number();
    else if (flag == "--kill-interval-ms") o.kill_interval_ms = number();
    else if (flag == "--echo-delay-ms") o.echo_delay_ms = number();
    else if (flag == "--poison") o.poison = number();
    else if (flag == "--drain-seconds") o.drain_seconds = number();
    else if (flag == "--shutdown-timeout") o.shutdown_timeout = number();
    else if (flag == "--seed") o.seed = static_cast<unsigned>(number());
    else if (flag == "--log-dir") o.log_dir = value;
    else if (flag == "--log-level") o.log_level = value;
    else usage("unknown flag " + flag);
  }
  if (o.mode != "restart" && o.mode != "sentinel" && o.mode != "discord" && o.mode != "matrix")
    usage("--mode is restart, sentinel, discord or matrix");
  if (o.redis_restart != "graceful" && o.redis_restart != "kill") usage("--redis-restart is graceful or kill");
  if (o.messages < 1 || o.channels < 1 || o.workers < 1 || o.gateways < 1 || o.shards < 1 || o.rate < 1 ||
      o.senders < 1 || o.poison < 0)
    usage("counts must be positive");
  return o;
}

std::string now_stamp() {
  const auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", std::localtime(&t));
  return buf;
}

template <class... Args>
void note(fmt::format_string<Args...> f, Args&&... args) {
  std::printf("[%s] %s\n", now_stamp().c_str(), fmt::format(f, std::forward<Args>(args)...).c_str());
  std::fflush(stdout);
}

// The command that shows a channel's order set (docs/protocol.md §4.6) in a post-mortem.
std::vector<std::string> order_set_of(const std::string& stream, const std::string& okey) {
  return {"ZRANGE", stargazer::bus::order_key(stream, okey), "0", "-1", "WITHSCORES"};
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The Redis deployment: one server with AOF, or (sentinel mode) a master, a replica and
// three sentinels.
class redis_deployment {
public:
  explicit redis_deployment(const options& o) : o_(o) {
    if (o.mode == "sentinel") {
      sentinels_ = std::make_unique<sentinel_cluster>();
      port_ = sentinels_->master_port();
    } else {
      redis_server_options ro;
      ro.appendonly = true;
      // A SIGKILLed Redis keeps only what reached the disk: fsync every write for that variant.
      ro.extra_args = {"--appendfsync", o.redis_restart == "kill" ? "always" : "everysec"};
      server_ = std::make_unique<redis_server>(ro);
      port_ = server_->port();
    }
  }

  // What every stargazer process is given to find Redis.
  std::vector<std::string> client_args() const {
    if (sentinels_) {
      std::string list;
      for (const auto& a : sentinels_->sentinel_addresses()) list += (list.empty() ? "" : ",") + a;
      return {"--redis-sentinels=" + list, "--redis-sentinel-master=" + sentinels_->master_name()};
    }
    return {"--redis-url=" + server_->url()};
  }

  std::string cli(const std::vector<std::string>& args) const { return redis_cli(port_.load(), args); }

  // Restart mode: stop Redis (SIGTERM: it writes its AOF and exits; or SIGKILL), leave it
  // down for a second, start it again from its AOF. Sentinel mode: SIGKILL the master and
  // wait for the sentinels to promote the replica.
  std::string disrupt() {
    if (sentinels_) {
      const auto before = port_.load();
      sentinels_->kill_master();
      port_ = sentinels_->wait_for_failover(30s);
      return fmt::format("Redis master :{} SIGKILLed, sentinels promoted :{}", before, port_.load());
    }
    const auto started = clock_type::now();
    if (o_.redis_restart == "kill") server_->kill();
    else server_->stop(10s);
    std::this_thread::sleep_for(1s);
    server_->start();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - started).count();
    return fmt::format("Redis {} and restarted from its AOF ({} ms down)",
                       o_.redis_restart == "kill" ? "SIGKILLed" : "stopped (SIGTERM)", ms);
  }

private:
  const options& o_;
  std::unique_ptr<redis_server> server_;
  std::unique_ptr<sentinel_cluster> sentinels_;
  std::atomic<std::uint16_t> port_{0};
};

// One role process, restarted under the same instance id (its consumer name), each run's
// output kept in <log_dir>/<name>.<run>.log.
class role_process {
public:
  role_process(std::string name, std::vector<std::string> argv, std::vector<std::string> env, std::string log_dir)
      : name_(std::move(name)), argv_(std::move(argv)), env_(std::move(env)), log_dir_(std::move(log_dir)) {}

  const std::string& name() const { return name_; }
  std::string log_path() const { return fmt::format("{}/{}.{}.log", log_dir_, name_, runs_); }

  void start() {
    ++runs_;
    down_ = false;
    process_ = std::make_unique<child_process>(argv_, env_, false, log_path());
  }
  // SIGKILL (a crash) and reaped; down until start().
  void crash() {
    process_->signal(SIGKILL);
    process_->wait(10s);
    down_ = true;
  }
  // A crash, left down for `down`, then started again.
  void crash_and_restart(std::chrono::milliseconds down = 0ms) {
    crash();
    std::this_thread::sleep_for(down);
    start();
  }
  // Exited without being asked to (not crashed on purpose): its status.
  std::optional<int> exited() { return down_ ? std::nullopt : process_->wait(0ms); }
  void terminate() { process_->signal(SIGTERM); }
  std::optional<int> wait(std::chrono::milliseconds timeout) { return process_->wait(timeout); }
  int runs() const { return runs_; }

private:
  std::string name_;
  std::vector<std::string> argv_;
  std::vector<std::string> env_;
  std::string log_dir_;
  int runs_ = 0;
  bool down_ = false;
  std::unique_ptr<child_process> process_;
};

std::string channel_name(int c) { return fmt::format("chaos-c{:03}", c); }
std::string message_text(int c, int m) { return fmt::format("c{:03}-m{:05}", c, m); }

// What became of one send.
enum class send_state { unsent, acknowledged, unconfirmed };

struct counters {
  std::atomic<int> acknowledged{0};
  std::atomic<int> replayed{0};       // acknowledged by an Idempotent-Replayed answer
  std::atomic<int> unconfirmed{0};
  std::atomic<int> send_retries{0};
  std::atomic<int> conflicts{0};      // 409 request_in_progress answers
  std::atomic<int> in_flight{0};      // requests between connect and answer
};

struct run_state {
  std::vector<std::vector<send_state>> sent;  // [channel][message]
  std::mutex mutex;
  counters count;
  std::atomic<bool> sending_done{false};
};

struct reply_log {
  std::vector<int> messages;  // message numbers in delivery order
  int foreign = 0;            // replies whose text is not a message of this channel
};

// A reply's text names the message it answers (the echo model repeats it): `c017-m00042`
// anywhere in it for message 42 of channel 17.
void add_reply(reply_log& log, int c, const std::string& text) {
  const auto prefix = fmt::format("c{:03}-m", c);
  const auto at = text.find(prefix);
  if (at == std::string::npos) {
    log.foreign++;
    return;
  }
  try {
    log.messages.push_back(std::stoi(text.substr(at + prefix.size())));
  } catch (const std::exception&) {
    log.foreign++;
  }
}

using role_list = std::vector<role_process*>;
// Adds the Redis address, shutdown timeout and log level every process gets.
using common_args = std::function<std::vector<std::string>(std::vector<std::string>)>;

// The platform the messages come in by and the replies go out on: its gateway processes,
// how a user sends, where the replies are read, and the faults only it has.
class platform_under_test {
public:
  virtual ~platform_under_test() = default;
  virtual std::string name() const = 0;  // the bus platform name (its outbound stream's suffix)
  virtual role_list gateways() = 0;
  // Gateways started and ready, channels made; false with `problem` set otherwise.
  virtual bool start(int channels, std::string& problem) = 0;
  virtual send_state send(int c, int m, counters& count, std::string& problem) = 0;
  virtual reply_log replies(int c) = 0;
  virtual long replies_delivered(int channels) = 0;  // all channels; -1: unknown right now
  // The mid-run gateway crash; what happened, for the event list.
  virtual std::string crash_gateway(const run_state& state, std::mt19937& rng) = 0;
  // Called every few ms by the chaos thread: follow-ups of earlier faults (a restart due,
  // a takeover to time); returns events.
  virtual std::vector<std::string> poll() { return {}; }
  // No follow-up of a fault is still due.
  virtual bool settled() const { return true; }
  // The fault at two thirds: a Redis restart or failover, or a dropped platform connection.
  virtual std::string second_fault(redis_deployment& redis, std::mt19937& rng) = 0;
  // Platform figures for the summary.
  virtual std::vector<std::string> figures() { return {}; }
  // The takeover after the gateway kill, where the platform measures one: the check's name
  // and whether it came within 10 s.
  virtual std::optional<std::pair<std::string, bool>> takeover_check() const { return std::nullopt; }
  // Post-mortem commands for a channel whose checks failed.
  virtual std::vector<std::vector<std::string>> post_mortem(int c) = 0;
};

constexpr const char* admin_key = "chaos-admin-key";
const std::string admin_header = std::string("Authorization: Bearer ") + admin_key + "\r\n";

// The Redis platform: a channel is an instance, users send through its REST API, the
// replies are the instance's event stream.
class redis_platform_under_test final : public platform_under_test {
public:
  redis_platform_under_test(const options& o, const common_args& common, redis_deployment& redis)
      : redis_(redis),
        http_port_(free_port()),
        gateway_("gateway",
                 common({o.binary, "--role=gateway", "--node-id=chaos-gateway",
                         "--http-port=" + std::to_string(http_port_), "--webchat-enabled=false"}),
                 {std::string("SG_ADMIN_API_KEY=") + admin_key}, o.log_dir) {}

  std::string name() const override { return "redis"; }
  role_list gateways() override { return {&gateway_}; }

  bool start(int channels, std::string& problem) override {
    gateway_.start();
    if (!wait_for_http(http_port_, 60s, "/readyz")) {
      problem = fmt::format("the gateway was not ready within 60 s (log: {})", gateway_.log_path());
      return false;
    }
    for (int c = 0; c < channels; ++c) {
      const auto r = http_request(http_port_, "POST", "/redis-platform/instances",
                                  fmt::format(R"({{"instance_id":"{}"}})", channel_name(c)), admin_header);
      if (r.status != 201) {
        problem = fmt::format("creating instance {} answered {}: {}", channel_name(c), r.status, r.body);
        return false;
      }
    }
    return true;
  }

  // Sends message m of channel c until the gateway acknowledges it (202, or the stored 202
  // of an earlier attempt with the same Idempotency-Key). Without an answer it cannot know
  // whether the message went in, so it retries with the same key; an answer of 409 ("the
  // first request with this key is still running") is retried for 30 s, after which the
  // message counts as unconfirmed: it may or may not have been injected.
  send_state send(int c, int m, counters& count, std::string& problem) override {
    constexpr auto ambiguity_limit = 30s;
    const auto text = message_text(c, m);
    const auto body = fmt::format(R"({{"text":"{}","user_id":"chaos","user_name":"Chaos"}})", text);
    const auto headers = admin_header + "Idempotency-Key: " + text + "\r\n";
    const auto target = "/redis-platform/instances/" + channel_name(c) + "/messages";
    std::optional<clock_type::time_point> first_conflict;
    for (int attempt = 0;; ++attempt) {
      if (attempt > 0) count.send_retries++;
      count.in_flight++;
      const auto r = http_request(http_port_, "POST", target, body, headers);
      count.in_flight--;
      if (r.status == 202) {
        if (r.headers.find("Idempotent-Replayed: true") != std::string::npos) count.replayed++;
        return send_state::acknowledged;
      }
      if (r.status == 409) {
        count.conflicts++;
        if (!first_conflict) first_conflict = clock_type::now();
        if (clock_type::now() - *first_conflict > ambiguity_limit) {
          problem = fmt::format("{}: 409 for {} s: {}", text, ambiguity_limit.count(), r.body);
          return send_state::unconfirmed;
        }
      } else if (r.status != 0 && r.status < 500) {
        problem = fmt::format("{}: HTTP {} {}", text, r.status, r.body);
        return send_state::unconfirmed;  // a 4xx: the gateway refused it, which it should not
      }
      std::this_thread::sleep_for(100ms);  // gateway down (no answer) or 5xx (Redis away)
    }
  }

  // The instance's event stream is written in the same script as the PUBLISH of each reply
  // (docs/protocol.md §5.6), so one entry is one delivery.
  reply_log replies(int c) override {
    reply_log out;
    for (const auto& line : lines_of(redis_.cli({"XRANGE", events_of(c), "-", "+"}))) {
      if (line.rfind("{\"type\":\"message\"", 0) != 0) continue;
      const auto at = line.find("\"text\":\"");
      if (at == std::string::npos) {
        out.foreign++;
        continue;
      }
      add_reply(out, c, line.substr(at + 8, line.find('"', at + 8) - at - 8));
    }
    return out;
  }

  // Each answered message leaves one entry, the reply (with its turn_complete); a redelivery
  // that finds its reply sent adds an entry with only a turn_complete, not counted.
  long replies_delivered(int channels) override {
    std::vector<std::string> args{"EVAL", R"lua(
local n = 0
for _, k in ipairs(KEYS) do
  for _, e in ipairs(redis.call('XRANGE', k, '-', '+')) do
    if string.sub(e[2][2], 1, 17) == '{"type":"message"' then n = n + 1 end
  end
end
return n
)lua", std::to_string(channels)};
    for (int c = 0; c < channels; ++c) args.push_back(events_of(c));
    try {
      return std::stol(redis_.cli(args));
    } catch (const std::exception&) {
      return -1;  // Redis away for a moment
    }
  }

  // Preferably while a send is in flight (its answer is lost: the Idempotency-Key retry must
  // not inject it twice); down for a second, so that sends meet a closed port and retry.
  std::string crash_gateway(const run_state& state, std::mt19937&) override {
    const auto spin_until = clock_type::now() + 2s;
    while (state.count.in_flight == 0 && clock_type::now() < spin_until) std::this_thread::yield();
    const int in_flight = state.count.in_flight;
    gateway_.crash_and_restart(1s);
    return fmt::format("gateway SIGKILLed ({} sends in flight), restarted 1 s later", in_flight);
  }

  std::string second_fault(redis_deployment& redis, std::mt19937&) override { return redis.disrupt(); }

  std::vector<std::vector<std::string>> post_mortem(int c) override {
    const auto name = channel_name(c);
    return {{"XRANGE", events_of(c), "-", "+"},
            order_set_of("sg:stream:inbound", "redis:" + name),
            order_set_of("sg:stream:outbound:redis", name),
            {"ZRANGE", "channel_msgs:redis:" + name, "0", "-1", "WITHSCORES"}};
  }

private:
  static std::string events_of(int c) { return "redis_platform:events:" + channel_name(c); }

  redis_deployment& redis_;
  std::uint16_t http_port_;
  role_process gateway_;
};

// Discord through the test server (test/support/discord): several gateway processes share
// the shards, users post through the server's control API (it dispatches MESSAGE_CREATE to
// the shard that holds the guild), the replies are the bot's messages in each channel.
// Faults of its own: a gateway SIGKILLed (another takes its shards over and resumes; it is
// started again once that has happened) and one gateway connection dropped.
class discord_under_test final : public platform_under_test {
public:
  discord_under_test(const options& o, const common_args& common, redis_deployment& redis)
      : o_(o), redis_(redis), discord_(server_args(o)), bot_(discord_.bot_user_id()) {
    for (int g = 1; g <= o.gateways; ++g)
      gateways_.push_back(std::make_unique<role_process>(
          "gateway-" + std::to_string(g),
          common({o.binary, "--role=gateway", fmt::format("--node-id=chaos-gateway-{}", g),
                  "--http-port=" + std::to_string(free_port()), "--webchat-enabled=false",
                  "--discord-api-url=" + discord_.api_url(), "--discord-shards=" + std::to_string(o.shards)}),
          std::vector<std::string>{"SG_DISCORD_TOKEN=" + discord_.token()}, o.log_dir));
  }

  std::string name() const override { return "discord"; }
  role_list gateways() override {
    role_list out;
    for (auto& g : gateways_) out.push_back(g.get());
    return out;
  }

  bool start(int channels, std::string& problem) override {
    const auto state = discord_.control("GET", "/_test/state");
    for (const auto& guild : state["guilds"].GetArray())
      for (const auto& channel : guild["channels"].GetArray())
        if (static_cast<int>(channel_ids_.size()) < channels) channel_ids_.push_back(channel["id"].GetString());
    if (static_cast<int>(channel_ids_.size()) < channels) {
      problem = fmt::format("the Discord test server has {} channels, {} wanted", channel_ids_.size(), channels);
      return false;
    }
    for (auto& g : gateways_) g->start();
    const auto until = clock_type::now() + 60s;
    while (discord_.connected_sessions() < o_.shards) {
      if (clock_type::now() > until) {
        problem = fmt::format("{} of {} shards connected after 60 s", discord_.connected_sessions(), o_.shards);
        return false;
      }
      std::this_thread::sleep_for(200ms);
    }
    return true;
  }

  // The test server always takes a user's post; the gateway's part starts at the dispatch.
  send_state send(int c, int m, counters&, std::string& problem) override {
    const auto content = "<@" + bot_ + "> " + message_text(c, m);
    try {
      discord_.post_message(channel_ids_[static_cast<std::size_t>(c)], "4242", content,
                            R"(,"mentions":[")" + bot_ + R"("])");
      return send_state::acknowledged;
    } catch (const std::exception& e) {
      problem = e.what();
      return send_state::unconfirmed;
    }
  }

  // The server keeps every message the bot created: one per delivery (a nonce repeated
  // within its window returns the first message instead of creating another).
  reply_log replies(int c) override {
    reply_log out;
    for (const auto& text : discord_.bot_messages(channel_ids_[static_cast<std::size_t>(c)])) add_reply(out, c, text);
    return out;
  }

  long replies_delivered(int) override {
    try {
      return discord_.counter("messages_created_by_bot");
    } catch (const std::exception&) {
      return -1;
    }
  }

  // SIGKILL the gateway holding the most shards; it stays down until the others have taken
  // its shards over (poll), so the takeover is what is measured.
  std::string crash_gateway(const run_state&, std::mt19937&) override {
    std::map<std::string, int> held;
    for (int s = 0; s < o_.shards; ++s) held[owner_of(s)]++;
    role_process* victim = gateways_.front().get();
    int most = -1;
    for (std::size_t g = 0; g < gateways_.size(); ++g) {
      const int n = held[fmt::format("chaos-gateway-{}", g + 1)];
      if (n > most) {
        most = n;
        victim = gateways_[g].get();
      }
    }
    resumes_before_kill_ = discord_.counter("resumes");
    victim->crash();
    crashed_ = victim;
    crashed_at_ = clock_type::now();
    return fmt::format("{} SIGKILLed holding {} of {} shards", victim->name(), most, o_.shards);
  }

  std::vector<std::string> poll() override {
    if (crashed_ == nullptr || clock_type::now() < next_poll_) return {};
    next_poll_ = clock_type::now() + 250ms;
    std::vector<std::string> events;
    // Taken over: every shard owned by a live gateway again and connected.
    bool taken_over = discord_.connected_sessions() >= o_.shards;
    for (int s = 0; taken_over && s < o_.shards; ++s)
      taken_over = !owner_of(s).empty() && owner_of(s) != fmt::format("chaos-{}", crashed_->name());
    const auto since = std::chrono::duration<double>(clock_type::now() - crashed_at_).count();
    if (taken_over) {
      const auto resumes = discord_.counter("resumes") - resumes_before_kill_;
      takeover_seconds_ = since;
      events.push_back(fmt::format("all {} shards connected to the surviving gateways {:.1f} s after the kill "
                                   "({} resumes since)", o_.shards, since, resumes));
    } else if (since < 30) {
      return events;
    } else {
      events.push_back(fmt::format("shards not taken over 30 s after the kill"));
    }
    crashed_->start();
    events.push_back(fmt::format("{} started again", crashed_->name()));
    crashed_ = nullptr;
    return events;
  }

  std::string second_fault(redis_deployment&, std::mt19937& rng) override {
    std::uniform_int_distribution<int> pick(0, o_.shards - 1);
    const int shard = pick(rng);
    const auto body = fmt::format(R"({{"shard_id":{}}})", shard);
    try {
      const auto answer = discord_.control("POST", "/_test/gateway/drop", body);
      return fmt::format("shard {}'s gateway connection dropped (no close frame)", shard);
    } catch (const std::exception& e) {
      return fmt::format("dropping shard {}'s connection failed: {}", shard, e.what());
    }
  }

  std::vector<std::string> figures() override {
    const auto takeover = takeover_seconds_ ? fmt::format("{:.1f} s", *takeover_seconds_) : std::string("never");
    std::vector<std::string> out{fmt::format(
        "Discord: {} gateways, {} shards; takeover after the gateway kill: {}; identifies {}, resumes {}, "
        "REST 429s {}, nonce replays answered {}",
        o_.gateways, o_.shards, takeover, discord_.counter("identifies"), discord_.counter("resumes"),
        discord_.counter("rest_429"), discord_.counter("nonce_dedup_hits"))};
    // Which limits were hit: by route and scope.
    std::map<std::string, int> refused;
    const auto records = discord_.control("GET", "/_test/requests?kind=rest");
    for (const auto& r : records["records"].GetArray())
      if (r.HasMember("status") && r["status"].IsInt() && r["status"].GetInt() == 429)
        refused[fmt::format("{} ({})", r.HasMember("route") && r["route"].IsString() ? r["route"].GetString() : "?",
                            r.HasMember("scope") && r["scope"].IsString() ? r["scope"].GetString() : "?")]++;
    for (const auto& [route, n] : refused) out.push_back(fmt::format("  429: {} x {}", n, route));
    return out;
  }

  bool settled() const override { return crashed_ == nullptr; }

  // Whether the takeover happened in time is a check of its own.
  std::optional<std::pair<std::string, bool>> takeover_check() const override {
    return std::pair<std::string, bool>("shards taken over within 10 s",
                                        takeover_seconds_ && *takeover_seconds_ <= 10.0);
  }

  std::vector<std::vector<std::string>> post_mortem(int c) override {
    const auto& id = channel_ids_[static_cast<std::size_t>(c)];
    return {order_set_of("sg:stream:outbound:discord", id),
            {"ZRANGE", "channel_msgs:discord:" + id, "0", "-1", "WITHSCORES"}};
  }

private:
  static std::vector<std::string> server_args(const options& o) {
    // Guilds spread over the shards (guild id >> 22 mod shards); enough channels for the run.
    const int guilds = std::max(o.shards * 2, 8);
    const int per_guild = (o.channels + guilds - 1) / guilds;
    return {"--guilds", std::to_string(guilds), "--channels", std::to_string(per_guild), "--shards",
            std::to_string(o.shards), "--heartbeat-ms", "5000"};
  }

  // The node id holding a shard's lease (docs/discord.md, keys).
  std::string owner_of(int shard) {
    auto out = redis_.cli({"GET", fmt::format("sg:discord:shard:{}:owner", shard)});
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    return out;
  }

  const options& o_;
  redis_deployment& redis_;
  discord_test_server discord_;
  std::string bot_;
  std::vector<std::unique_ptr<role_process>> gateways_;
  std::vector<std::string> channel_ids_;
  role_process* crashed_ = nullptr;
  clock_type::time_point crashed_at_;
  clock_type::time_point next_poll_;
  long resumes_before_kill_ = 0;
  std::optional<double> takeover_seconds_;
};

// Matrix through the homeserver test server (test/support/matrix): several gateway
// processes for the one bot account, of which the holder of the sync lease syncs; a human
// posts through the server's control API in rooms she shares with the bot alone (a room of
// two is a direct chat: every message is addressed), the replies are the bot's
// m.room.message events in each room. Faults of its own: the syncing gateway SIGKILLed
// (another takes the lease over and syncs on from the stored token; the killed one is
// started again once that has happened) and one /sync answer dropped after the server
// made it.
class matrix_under_test final : public platform_under_test {
public:
  matrix_under_test(const options& o, const common_args& common, redis_deployment& redis)
      : o_(o), redis_(redis) {
    for (int g = 1; g <= o.gateways; ++g) {
      const auto port = free_port();
      ports_.push_back(port);
      gateways_.push_back(std::make_unique<role_process>(
          "gateway-" + std::to_string(g),
          common({o.binary, "--role=gateway", "--node-id=" + node_id(g),
                  "--http-port=" + std::to_string(port), "--webchat-enabled=false",
                  "--matrix-homeserver=" + homeserver_.url(), std::string("--matrix-user-id=") + bot}),
          std::vector<std::string>{std::string("SG_MATRIX_PASSWORD=") + bot_password}, o.log_dir));
    }
  }

  std::string name() const override { return "matrix"; }
  role_list gateways() override {
    role_list out;
    for (auto& g : gateways_) out.push_back(g.get());
    return out;
  }

  // The users and rooms first, so the first sync knows them all and answers none of their
  // history. One gateway starts alone: it logs in and keeps the session (the device the
  // transaction ids belong to) in Redis, takes the lease and syncs; the others start once
  // that is done, reuse the session and stand by.
  bool start(int channels, std::string& problem) override {
    try {
      homeserver_.user("bot", bot_password);
      homeserver_.user("alice", "alicepw");
      for (int c = 0; c < channels; ++c) {
        const auto created = homeserver_.control(
            "POST", "/_test/rooms",
            fmt::format(R"({{"creator":"{}","name":"{}","members":["{}"]}})", human, channel_name(c), bot));
        room_ids_.emplace_back(created["room_id"].GetString());
      }
    } catch (const std::exception& e) {
      problem = std::string("setting up the Matrix test homeserver: ") + e.what();
      return false;
    }
    gateways_.front()->start();
    if (!ready(0, problem)) return false;
    // The first sync (no token, no wait) is behind the gateway once the second arrives.
    const auto until = clock_type::now() + 60s;
    while (syncs() < 2) {
      if (clock_type::now() > until) {
        problem = fmt::format("{} did not sync twice within 60 s (log: {})", gateways_.front()->name(),
                              gateways_.front()->log_path());
        return false;
      }
      std::this_thread::sleep_for(200ms);
    }
    for (std::size_t g = 1; g < gateways_.size(); ++g) gateways_[g]->start();
    for (std::size_t g = 1; g < gateways_.size(); ++g)
      if (!ready(g, problem)) return false;
    if (const auto holder = lease_holder(); holder != node_id(1)) {
      problem = fmt::format("the sync lease is held by '{}', not {}", holder, node_id(1));
      return false;
    }
    return true;
  }

  // The control API always takes a joined member's post; the gateway's part starts at the
  // sync that carries it.
  send_state send(int c, int m, counters&, std::string& problem) override {
    try {
      homeserver_.post(room_ids_[static_cast<std::size_t>(c)], human, message_text(c, m));
      return send_state::acknowledged;
    } catch (const std::exception& e) {
      problem = e.what();
      return send_state::unconfirmed;
    }
  }

  // The room keeps every event the bot created: one per delivery (a send repeated with its
  // transaction id from the same device gets the first event back instead of another).
  reply_log replies(int c) override {
    reply_log out;
    try {
      for (const auto& body : bot_bodies(room_ids_[static_cast<std::size_t>(c)])) add_reply(out, c, body);
    } catch (const std::exception& e) {
      note("reading the replies in {} failed: {}", room_ids_[static_cast<std::size_t>(c)], e.what());
    }
    return out;
  }

  long replies_delivered(int channels) override {
    try {
      long n = 0;
      for (int c = 0; c < channels; ++c)
        n += static_cast<long>(bot_bodies(room_ids_[static_cast<std::size_t>(c)]).size());
      return n;
    } catch (const std::exception&) {
      return -1;
    }
  }

  // SIGKILL the gateway that syncs (the lease's holder); it stays down until another holds
  // the lease (poll), so the takeover is what is measured.
  std::string crash_gateway(const run_state&, std::mt19937&) override {
    const auto holder = lease_holder();
    std::size_t victim = 0;
    for (std::size_t g = 0; g < gateways_.size(); ++g)
      if (node_id(static_cast<int>(g) + 1) == holder) victim = g;
    crashed_node_ = node_id(static_cast<int>(victim) + 1);
    crashed_ = gateways_[victim].get();
    crashed_->crash();
    crashed_at_ = clock_type::now();
    if (holder == crashed_node_) return fmt::format("{} SIGKILLed holding the sync lease", crashed_->name());
    return fmt::format("{} SIGKILLed; the sync lease was held by '{}', not a gateway of the run",
                       crashed_->name(), holder);
  }

  std::vector<std::string> poll() override {
    if (crashed_ == nullptr || clock_type::now() < next_poll_) return {};
    next_poll_ = clock_type::now() + 250ms;
    std::vector<std::string> events;
    // Taken over: another gateway of the run holds the lease.
    const auto holder = lease_holder();
    bool taken_over = false;
    for (int g = 1; g <= o_.gateways; ++g)
      taken_over = taken_over || (holder == node_id(g) && holder != crashed_node_);
    const auto since = std::chrono::duration<double>(clock_type::now() - crashed_at_).count();
    if (taken_over) {
      takeover_seconds_ = since;
      events.push_back(fmt::format("{} holds the sync lease {:.1f} s after the kill", holder, since));
    } else if (since < 30) {
      return events;
    } else {
      events.push_back("the sync lease not taken over 30 s after the kill");
    }
    crashed_->start();
    events.push_back(fmt::format("{} started again", crashed_->name()));
    crashed_ = nullptr;
    return events;
  }

  // The next /sync answer is made (the batch it carries included) and its connection closed
  // before it is sent: the gateway must sync again from the same token.
  std::string second_fault(redis_deployment&, std::mt19937&) override {
    try {
      homeserver_.control("POST", "/_test/force",
                          R"({"path":"/sync$","method":"GET","count":1,"drop":"after"})");
      return "the next /sync answer dropped after the homeserver made it";
    } catch (const std::exception& e) {
      return fmt::format("forcing a dropped /sync answer failed: {}", e.what());
    }
  }

  std::vector<std::string> figures() override {
    const auto takeover =
        takeover_seconds_ ? fmt::format("{:.1f} s", *takeover_seconds_) : std::string("never");
    try {
      const auto recording = homeserver_.control("GET", "/_test/requests?path=^$");
      if (!recording.IsObject() || !recording.HasMember("counters") || !recording["counters"].IsObject())
        throw std::runtime_error("no counters in GET /_test/requests");
      const auto counters = recording["counters"].GetObject();
      const auto count = [&](const char* name) -> std::int64_t {
        return counters.HasMember(name) && counters[name].IsInt64() ? counters[name].GetInt64() : 0;
      };
      std::vector<std::string> out{fmt::format(
          "Matrix: {} gateways, {} rooms; sync lease taken over after the gateway kill: {}; syncs {}, "
          "transaction replays answered {}, answers dropped {}",
          o_.gateways, room_ids_.size(), takeover, count("syncs"), count("txn_dedup"), count("dropped"))};
      // The homeserver's error answers, by errcode.
      for (const auto& c : counters)
        if (std::string_view(c.name.GetString()).starts_with("errors_") && c.value.IsInt64())
          out.push_back(fmt::format("  {}: {}", c.name.GetString(), c.value.GetInt64()));
      return out;
    } catch (const std::exception& e) {
      return {fmt::format(
          "Matrix: {} gateways; sync lease taken over after the gateway kill: {}; the homeserver's "
          "counters unreadable: {}",
          o_.gateways, takeover, e.what())};
    }
  }

  bool settled() const override { return crashed_ == nullptr; }

  std::optional<std::pair<std::string, bool>> takeover_check() const override {
    return std::pair<std::string, bool>("sync taken over within 10 s",
                                        takeover_seconds_ && *takeover_seconds_ <= 10.0);
  }

  std::vector<std::vector<std::string>> post_mortem(int c) override {
    const auto& id = room_ids_[static_cast<std::size_t>(c)];
    return {order_set_of("sg:stream:outbound:matrix", id),
            {"ZRANGE", "channel_msgs:matrix:" + id, "0", "-1", "WITHSCORES"}};
  }

private:
  static constexpr const char* bot = "@bot:localhost";
  static constexpr const char* bot_password = "botpw";
  static constexpr const char* human = "@alice:localhost";

  static std::string node_id(int g) { return fmt::format("chaos-gateway-{}", g); }

  bool ready(std::size_t g, std::string& problem) {
    if (wait_for_http(ports_[g], 60s, "/readyz")) return true;
    problem =
        fmt::format("{} was not ready within 60 s (log: {})", gateways_[g]->name(), gateways_[g]->log_path());
    return false;
  }

  // The /sync requests the homeserver has had (counted when they arrive).
  long syncs() {
    try {
      const auto r = homeserver_.control("GET", "/_test/requests?path=^$");
      return r.IsObject() && r.HasMember("counters") && r["counters"].IsObject() &&
                     r["counters"].HasMember("syncs") && r["counters"]["syncs"].IsInt64()
                 ? r["counters"]["syncs"].GetInt64()
                 : 0;
    } catch (const std::exception&) {
      return 0;
    }
  }

  // The node id holding the sync lease (docs/matrix.md, keys); "" when nobody does.
  std::string lease_holder() const {
    return redis_.cli({"GET", std::string("sg:matrix:") + bot + ":sync_lease"});
  }

  // The bodies of the bot's m.room.message events in the room, oldest first.
  std::vector<std::string> bot_bodies(const std::string& room_id) {
    const auto events =
        homeserver_.control("GET", "/_test/rooms/" + stargazer::percent_encode(room_id) + "/events");
    std::vector<std::string> out;
    if (!events.IsArray()) return out;
    for (const auto& e : events.GetArray()) {
      if (!e.IsObject() || stargazer::json::string_member(e, "sender") != bot ||
          stargazer::json::string_member(e, "type") != "m.room.message")
        continue;
      out.push_back(e.HasMember("content") ? stargazer::json::string_member(e["content"], "body")
                                           : std::string());
    }
    return out;
  }

  const options& o_;
  redis_deployment& redis_;
  matrix_test_server homeserver_;
  std::vector<std::uint16_t> ports_;
  std::vector<std::unique_ptr<role_process>> gateways_;
  std::vector<std::string> room_ids_;
  role_process* crashed_ = nullptr;
  std::string crashed_node_;
  clock_type::time_point crashed_at_;
  clock_type::time_point next_poll_;
  std::optional<double> takeover_seconds_;
};

// Number of pending entries of a group ("XPENDING stream group" answers count first).
long pending_of(const redis_deployment& redis, const std::string& stream, const std::string& group) {
  const auto out = lines_of(redis.cli({"XPENDING", stream, group}));
  if (out.empty()) return -1;
  try {
    return std::stol(out[0]);
  } catch (const std::exception&) {
    return -1;  // e.g. NOGROUP
  }
}

struct dead_letters {
  int poisoned = 0;       // carry the chaos_poison field
  int other = 0;          // anything else: a real message dead-lettered
  std::vector<std::string> reasons;
};

// The entries of a dead-letter stream: which are the poisoned ones and their reasons.
dead_letters dead_letters_of(const redis_deployment& redis, const std::string& dlq) {
  dead_letters out;
  const auto lines = lines_of(redis.cli({"XRANGE", dlq, "-", "+"}));
  // Raw output: entry id, then field and value lines; an entry starts at a line that
  // looks like a stream id and is followed by a field name.
  bool poisoned = false;
  bool in_entry = false;
  const auto finish = [&] {
    if (!in_entry) return;
    (poisoned ? out.poisoned : out.other)++;
  };
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const auto& l = lines[i];
    if (l == "chaos_poison") poisoned = true;
    if (l == "dlq_reason" && i + 1 < lines.size()) out.reasons.push_back(lines[i + 1]);
    if (l == "dlq_ts" && i + 1 < lines.size()) {
      // dlq_ts is the last field the consumer writes: the entry ends after its value.
      ++i;
      in_entry = true;
      finish();
      in_entry = false;
      poisoned = false;
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  auto o = parse(argc, argv);
  if (o.seed == 0) o.seed = static_cast<unsigned>(std::chrono::system_clock::now().time_since_epoch().count());
  std::mt19937 rng(o.seed);
  bool temp_logs = o.log_dir.empty();
  if (temp_logs) {
    std::string templ = (std::filesystem::temp_directory_path() / "sg-chaos-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) usage("cannot create a log directory");
    o.log_dir = templ;
  } else {
    std::filesystem::create_directories(o.log_dir);
  }
  const int per_channel = (o.messages + o.channels - 1) / o.channels;
  const int total = per_channel * o.channels;
  note("chaos run: mode={} messages={} ({} channels x {}) workers={} rate={}/s model delay {} ms, kill every {} ms "
       "seed={} logs in {}",
       o.mode, total, o.channels, per_channel, o.workers, o.rate, o.echo_delay_ms, o.kill_interval_ms, o.seed,
       o.log_dir);
  const auto run_started = clock_type::now();

  redis_deployment redis(o);
  const common_args common = [&](std::vector<std::string> args) {
    for (const auto& a : redis.client_args()) args.push_back(a);
    args.push_back("--shutdown-timeout=" + std::to_string(o.shutdown_timeout));
    args.push_back("--log-level=" + o.log_level);
    return args;
  };
  std::unique_ptr<platform_under_test> platform;
  if (o.mode == "discord") {
    platform = std::make_unique<discord_under_test>(o, common, redis);
  } else if (o.mode == "matrix") {
    platform = std::make_unique<matrix_under_test>(o, common, redis);
  } else {
    platform = std::make_unique<redis_platform_under_test>(o, common, redis);
  }
  role_process tools("tools", common({o.binary, "--role=tools", "--node-id=chaos-tools"}), {}, o.log_dir);
  std::vector<std::unique_ptr<role_process>> workers;
  for (int i = 1; i <= o.workers; ++i) {
    const auto id = fmt::format("chaos-worker-{}", i);
    workers.push_back(std::make_unique<role_process>(
        "worker-" + std::to_string(i),
        common({o.binary, "--role=worker", "--node-id=" + id, "--llm-provider=echo",
                "--llm-echo-delay-ms=" + std::to_string(o.echo_delay_ms), "--tools-mode=remote",
                "--presence-interval=0"}),
        std::vector<std::string>{}, o.log_dir));
  }
  tools.start();
  for (auto& w : workers) w->start();
  if (std::string problem; !platform->start(o.channels, problem)) {
    note("FAIL: {}", problem);
    return 1;
  }
  const auto gateways = platform->gateways();
  note("{} processes up, {} {} channels ready", 1 + gateways.size() + workers.size(), o.channels, platform->name());

  run_state state;
  state.sent.assign(o.channels, std::vector<send_state>(per_channel, send_state::unsent));
  std::vector<std::string> events;
  std::vector<std::string> unexpected_exits;
  std::mutex events_mutex;
  const auto event = [&](std::string what) {
    note("chaos: {}", what);
    std::lock_guard lock(events_mutex);
    events.push_back(std::move(what));
  };

  // ---- senders ---------------------------------------------------------------------------
  std::vector<std::string> send_problems;
  std::vector<std::thread> senders;
  const auto send_interval = std::chrono::microseconds(1'000'000LL * o.senders / o.rate);
  for (int s = 0; s < o.senders; ++s) {
    senders.emplace_back([&, s] {
      auto next = clock_type::now();
      for (int m = 0; m < per_channel; ++m) {
        for (int c = s; c < o.channels; c += o.senders) {
          std::this_thread::sleep_until(next);
          next += send_interval;
          std::string problem;
          const auto st = platform->send(c, m, state.count, problem);
          if (st == send_state::acknowledged) state.count.acknowledged++;
          else state.count.unconfirmed++;
          std::lock_guard lock(state.mutex);
          state.sent[c][m] = st;
          if (!problem.empty()) send_problems.push_back(problem);
        }
      }
    });
  }

  // ---- poison: undecodable entries straight onto the inbound stream ----------------------
  std::thread poisoner([&] {
    // Spread over the first half of the run, between real messages.
    for (int p = 0; p < o.poison; ++p) {
      while (state.count.acknowledged < total * (p + 1) / (2 * (o.poison + 1)) && !state.sending_done)
        std::this_thread::sleep_for(50ms);
      const auto tag = std::to_string(p + 1);
      std::vector<std::string> args{"XADD", "sg:stream:inbound", "*", "chaos_poison", tag};
      switch (p % 3) {
        case 0: args.insert(args.end(), {"data", "not msgpack at all"}); break;
        case 1: break;  // no data field
        case 2: args.insert(args.end(), {"data", "\x81\xa1v\x63"}); break;  // {"v": 99}
      }
      std::string id;
      for (int tries = 0; tries < 100 && id.find('-') == std::string::npos; ++tries) {
        id = redis.cli(args);
        if (id.find('-') == std::string::npos) std::this_thread::sleep_for(100ms);
      }
      event("poisoned entry " + tag + " XADDed as " + id);
    }
  });

  // ---- chaos -----------------------------------------------------------------------------
  int worker_kills = 0;
  std::thread chaos([&] {
    bool gateway_done = false, second_fault_done = false;
    auto next_kill = clock_type::now() + std::chrono::milliseconds(o.kill_interval_ms);
    std::uniform_int_distribution<int> pick(0, o.workers - 1);
    while (!state.sending_done) {
      std::this_thread::sleep_for(20ms);
      const int progress = state.count.acknowledged + state.count.unconfirmed;
      // A process that died without being killed is a finding: note it and bring it back.
      auto watched = gateways;
      watched.push_back(&tools);
      for (auto* p : watched) {
        if (const auto st = p->exited()) {
          unexpected_exits.push_back(fmt::format("{} exited by itself with status {} (log: {})", p->name(), *st,
                                                 p->log_path()));
          event(unexpected_exits.back());
          p->start();
        }
      }
      for (auto& w : workers)
        if (const auto st = w->exited()) {
          unexpected_exits.push_back(fmt::format("{} exited by itself with status {} (log: {})", w->name(), *st,
                                                 w->log_path()));
          event(unexpected_exits.back());
          w->start();
        }
      if (clock_type::now() >= next_kill) {
        auto& w = *workers[static_cast<std::size_t>(pick(rng))];
        w.crash_and_restart();
        ++worker_kills;
        note("chaos: {} SIGKILLed and restarted (run {})", w.name(), w.runs());
        // From now, not from the last due time: after a pause (the Redis restart) kills do
        // not come in a burst.
        next_kill = clock_type::now() + std::chrono::milliseconds(o.kill_interval_ms);
      }
      if (!gateway_done && progress >= total / 3) {
        gateway_done = true;
        const auto what = platform->crash_gateway(state, rng);
        event(fmt::format("at {} of {} sends: {}", progress, total, what));
      }
      for (auto& e : platform->poll()) event(std::move(e));
      if (!second_fault_done && progress >= total * 2 / 3) {
        second_fault_done = true;
        const auto what = platform->second_fault(redis, rng);
        event(fmt::format("at {} of {} sends: {}", progress, total, what));
      }
    }
  });

  for (auto& t : senders) t.join();
  const auto sending_ended = clock_type::now();
  state.sending_done = true;
  chaos.join();
  poisoner.join();
  note("sending done: {} acknowledged, {} unconfirmed, {} retries, {} worker kills", state.count.acknowledged.load(),
       state.count.unconfirmed.load(), state.count.send_retries.load(), worker_kills);

  // ---- drain -----------------------------------------------------------------------------
  // Wait until every acknowledged message has a reply (and a gateway crashed on purpose is
  // back), or the drain time is over.
  const long expected = state.count.acknowledged;
  const auto drain_until = clock_type::now() + std::chrono::seconds(o.drain_seconds);
  long replies_now = 0;
  long last_reported = -1;
  while (clock_type::now() < drain_until) {
    for (auto& e : platform->poll()) event(std::move(e));
    replies_now = platform->replies_delivered(o.channels);
    if (replies_now >= expected && platform->settled()) break;
    if (replies_now / 100 != last_reported / 100) {
      note("draining: {} of {} replies", replies_now, expected);
      last_reported = replies_now;
    }
    std::this_thread::sleep_for(500ms);
  }
  const auto drained_after = std::chrono::duration<double>(clock_type::now() - sending_ended).count();
  // Late duplicates and the pending list settle a little after the last reply.
  std::this_thread::sleep_for(3s);

  // ---- checks ----------------------------------------------------------------------------
  int lost = 0, duplicated = 0, order_violations = 0, foreign = 0, answered = 0, unconfirmed_answered = 0,
      unsent_answered = 0;
  std::vector<std::string> details;
  std::vector<int> troubled;  // channels whose Redis state is saved for the post-mortem
  for (int c = 0; c < o.channels; ++c) {
    const int problems_before = lost + duplicated + order_violations + foreign;
    const auto log = platform->replies(c);
    foreign += log.foreign;
    std::vector<int> seen(per_channel, 0);
    int last = -1;
    for (const int m : log.messages) {
      if (m < 0 || m >= per_channel) {
        ++foreign;
        continue;
      }
      if (seen[m]++ == 0) {
        if (m < last) {
          ++order_violations;
          if (details.size() < 20) details.push_back(fmt::format("order: {} answered after m{:05}", message_text(c, m), last));
        }
        last = std::max(last, m);
      }
    }
    for (int m = 0; m < per_channel; ++m) {
      const auto st = state.sent[c][m];
      if (seen[m] > 0) ++answered;
      if (seen[m] > 1) {
        duplicated += seen[m] - 1;
        if (details.size() < 20) details.push_back(fmt::format("duplicate: {} answered {} times", message_text(c, m), seen[m]));
      }
      if (st == send_state::acknowledged && seen[m] == 0) {
        ++lost;
        if (details.size() < 20) details.push_back(fmt::format("lost: {} acknowledged, never answered", message_text(c, m)));
      }
      if (st == send_state::unconfirmed && seen[m] > 0) ++unconfirmed_answered;
      if (st == send_state::unsent && seen[m] > 0) ++unsent_answered;
    }
    if (lost + duplicated + order_violations + foreign > problems_before) troubled.push_back(c);
  }
  // Redis goes away with the run: keep what a post-mortem needs next to the process logs.
  const auto save = [&](const std::string& file, const std::vector<std::vector<std::string>>& commands) {
    std::FILE* out = std::fopen((o.log_dir + "/" + file).c_str(), "w");
    if (out == nullptr) return;
    for (const auto& command : commands) {
      std::string line = ">";
      for (const auto& a : command) line += " " + a;
      std::fprintf(out, "%s\n%s\n", line.c_str(), redis.cli(command).c_str());
    }
    std::fclose(out);
  };
  const auto outbound = "sg:stream:outbound:" + platform->name();
  if (!troubled.empty())
    save("redis-streams.txt", {{"XRANGE", "sg:stream:inbound", "-", "+"}, {"XRANGE", outbound, "-", "+"}});
  for (std::size_t i = 0; i < troubled.size() && i < 20; ++i)
    save("redis-" + channel_name(troubled[i]) + ".txt", platform->post_mortem(troubled[i]));

  const auto inbound_dlq = dead_letters_of(redis, "sg:stream:inbound:dlq");
  const auto outbound_dlq = dead_letters_of(redis, outbound + ":dlq");
  const auto tools_dlq = dead_letters_of(redis, "sg:stream:tools:dlq");
  if (inbound_dlq.other + outbound_dlq.other + tools_dlq.other > 0)
    save("redis-dlq.txt", {{"XRANGE", "sg:stream:inbound:dlq", "-", "+"},
                           {"XRANGE", outbound + ":dlq", "-", "+"},
                           {"XRANGE", "sg:stream:tools:dlq", "-", "+"}});
  const bool dlq_ok = inbound_dlq.poisoned == o.poison && inbound_dlq.other == 0 && outbound_dlq.poisoned == 0 &&
                      outbound_dlq.other == 0 && tools_dlq.poisoned == 0 && tools_dlq.other == 0;

  const std::vector<std::pair<std::string, std::string>> groups{{"sg:stream:inbound", "sg:workers"},
                                                                {outbound, "sg:gateway:" + platform->name()},
                                                                {"sg:stream:tools", "sg:tools"}};
  std::map<std::string, long> pending;
  // Pending entries may still be on their way to an ack; give them a grace period.
  const auto pending_until = clock_type::now() + 30s;
  for (;;) {
    long sum = 0;
    for (const auto& [stream, group] : groups) sum += std::abs(pending[stream] = pending_of(redis, stream, group));
    if (sum == 0 || clock_type::now() >= pending_until) break;
    std::this_thread::sleep_for(500ms);
  }

  // ---- clean exit ------------------------------------------------------------------------
  std::vector<std::pair<std::string, std::optional<int>>> exits;
  auto all = gateways;
  all.push_back(&tools);
  for (auto& w : workers) all.push_back(w.get());
  for (auto* p : all) p->terminate();
  for (auto* p : all) exits.emplace_back(p->name(), p->wait(std::chrono::seconds(o.shutdown_timeout + 10)));
  bool exits_ok = unexpected_exits.empty();
  for (const auto& [name, st] : exits) exits_ok = exits_ok && st && *st == 0;

  // ---- summary ---------------------------------------------------------------------------
  const bool pending_ok =
      std::all_of(pending.begin(), pending.end(), [](const auto& p) { return p.second == 0; });
  const bool sends_ok = state.count.unconfirmed == 0 && unsent_answered == 0;
  const bool replies_ok = lost == 0 && duplicated == 0 && foreign == 0;
  const auto takeover = platform->takeover_check();
  const bool takeover_ok = !takeover || takeover->second;
  const bool passed =
      sends_ok && replies_ok && order_violations == 0 && dlq_ok && pending_ok && exits_ok && takeover_ok;
  const auto elapsed = std::chrono::duration<double>(clock_type::now() - run_started).count();

  const auto row = [](const std::string& what, const std::string& value, bool ok) {
    std::printf("  %-34s %-40s %s\n", what.c_str(), value.c_str(), ok ? "ok" : "FAIL");
  };
  std::printf("\nchaos summary (mode %s, seed %u, %.0f s)\n", o.mode.c_str(), o.seed, elapsed);
  for (const auto& e : events) std::printf("  event: %s\n", e.c_str());
  std::printf("  worker kills: %d (every %d ms); Redis: %s\n", worker_kills, o.kill_interval_ms,
              o.mode == "sentinel" ? "master, replica, 3 sentinels" :
              (o.redis_restart == "kill" ? "AOF, appendfsync always" : "AOF, appendfsync everysec"));
  for (const auto& f : platform->figures()) std::printf("  %s\n", f.c_str());
  row("sent (acknowledged)", fmt::format("{} of {} ({} replayed by Idempotency-Key, {} retries)",
                                                        state.count.acknowledged.load(), total,
                                                        state.count.replayed.load(), state.count.send_retries.load()),
      state.count.acknowledged == total);
  row("unconfirmed sends", fmt::format("{} ({} of them answered; {} x 409)", state.count.unconfirmed.load(),
                                       unconfirmed_answered, state.count.conflicts.load()),
      state.count.unconfirmed == 0);
  row("answered", fmt::format("{} (all replies in {:.1f} s after the last send)", answered, drained_after),
      answered == state.count.acknowledged + unconfirmed_answered);
  row("lost", std::to_string(lost), lost == 0);
  row("duplicated", std::to_string(duplicated), duplicated == 0);
  row("foreign replies", std::to_string(foreign), foreign == 0);
  row("per-channel order violations", std::to_string(order_violations), order_violations == 0);
  row("inbound DLQ", fmt::format("{} poisoned of {}, {} other", inbound_dlq.poisoned, o.poison, inbound_dlq.other),
      inbound_dlq.poisoned == o.poison && inbound_dlq.other == 0);
  row("outbound and tools DLQ", std::to_string(outbound_dlq.poisoned + outbound_dlq.other + tools_dlq.poisoned +
                                               tools_dlq.other),
      outbound_dlq.poisoned + outbound_dlq.other + tools_dlq.poisoned + tools_dlq.other == 0);
  for (const auto& [stream, n] : pending) row("pending " + stream, std::to_string(n), n == 0);
  for (const auto& [name, st] : exits)
    row("exit on SIGTERM: " + name, st ? std::to_string(*st) : "still running", st && *st == 0);
  row("unexpected exits during the run", std::to_string(unexpected_exits.size()), unexpected_exits.empty());
  if (takeover) row(takeover->first, takeover->second ? "yes" : "no", takeover->second);
  for (const auto& r : inbound_dlq.reasons) std::printf("  inbound dead letter: %s\n", r.c_str());
  for (const auto& r : outbound_dlq.reasons) std::printf("  outbound dead letter: %s\n", r.c_str());
  for (const auto& d : details) std::printf("  %s\n", d.c_str());
  for (std::size_t i = 0; i < send_problems.size() && i < 10; ++i) std::printf("  send: %s\n", send_problems[i].c_str());
  for (const auto& u : unexpected_exits) std::printf("  %s\n", u.c_str());
  std::printf("RESULT: %s\n", passed ? "PASS" : "FAIL");
  if (passed && temp_logs) std::filesystem::remove_all(o.log_dir);
  else std::printf("process logs: %s\n", o.log_dir.c_str());
  return passed ? 0 : 1;
}
