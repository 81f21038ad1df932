// Chaos run (issue 9): a gateway, several workers and a tools service as separate
// processes of the real binary on a real Redis, messages sent through the REST API while
// workers are SIGKILLed and restarted every few seconds, the gateway is SIGKILLed and
// restarted once, and Redis is restarted once (or, in sentinel mode, its master is
// killed and Sentinel fails over). At the end it checks, prints and exits non-zero on any
// failure: every acknowledged message answered exactly once, per-channel order kept, the
// dead-letter streams holding only the deliberately poisoned entries, no pending entries
// left, every process exiting 0 on SIGTERM. docs/chaos.md describes the run.

#include "child_process.hpp"
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
#include <string>
#include <thread>
#include <vector>

using namespace stargazer::test;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

struct options {
  std::string binary = STARGAZER_BINARY;
  std::string mode = "restart";           // restart | sentinel
  std::string redis_restart = "graceful";  // graceful (SIGTERM) | kill (SIGKILL, appendfsync always)
  int messages = 600;
  int channels = 20;
  int workers = 3;
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
               "usage: stargazer_chaos [--binary PATH] [--mode restart|sentinel] [--redis-restart graceful|kill]\n"
               "  [--messages N] [--channels N] [--workers N] [--rate N] [--senders N] [--kill-interval-ms N]\n"
               "  [--echo-delay-ms N] [--poison N] [--drain-seconds N] [--shutdown-timeout N] [--seed N] [--log-dir DIR]\n"
               "  [--log-level LEVEL]\n",
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
  if (o.mode != "restart" && o.mode != "sentinel") usage("--mode is restart or sentinel");
  if (o.redis_restart != "graceful" && o.redis_restart != "kill") usage("--redis-restart is graceful or kill");
  if (o.messages < 1 || o.channels < 1 || o.workers < 1 || o.rate < 1 || o.senders < 1 || o.poison < 0)
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

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The Redis deployment: one server with AOF, or a master, a replica and three sentinels.
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
    process_ = std::make_unique<child_process>(argv_, env_, false, log_path());
  }
  // SIGKILL (a crash), reaped, left down for `down`, then started again.
  void crash_and_restart(std::chrono::milliseconds down = 0ms) {
    process_->signal(SIGKILL);
    process_->wait(10s);
    std::this_thread::sleep_for(down);
    start();
  }
  // Exited without being asked to: its status.
  std::optional<int> exited() { return process_->wait(0ms); }
  void terminate() { process_->signal(SIGTERM); }
  std::optional<int> wait(std::chrono::milliseconds timeout) { return process_->wait(timeout); }
  int runs() const { return runs_; }

private:
  std::string name_;
  std::vector<std::string> argv_;
  std::vector<std::string> env_;
  std::string log_dir_;
  int runs_ = 0;
  std::unique_ptr<child_process> process_;
};

constexpr const char* admin_key = "chaos-admin-key";
const std::string admin_header = std::string("Authorization: Bearer ") + admin_key + "\r\n";

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
  std::atomic<bool> gateway_down{false};
};

// Sends message m of channel c until the gateway acknowledges it (202, or the stored 202
// of an earlier attempt with the same Idempotency-Key). Without an answer it cannot know
// whether the message went in, so it retries with the same key; an answer of 409 ("the
// first request with this key is still running") is retried for `ambiguity_limit`, after
// which the message counts as unconfirmed: it may or may not have been injected.
send_state send_one(std::uint16_t port, int c, int m, counters& count, std::chrono::seconds ambiguity_limit,
                    std::string& last_problem) {
  const auto text = message_text(c, m);
  const auto body = fmt::format(R"({{"text":"{}","user_id":"chaos","user_name":"Chaos"}})", text);
  const auto headers = admin_header + "Idempotency-Key: " + text + "\r\n";
  const auto target = "/redis-platform/instances/" + channel_name(c) + "/messages";
  std::optional<clock_type::time_point> first_conflict;
  for (int attempt = 0;; ++attempt) {
    if (attempt > 0) count.send_retries++;
    count.in_flight++;
    const auto r = http_request(port, "POST", target, body, headers);
    count.in_flight--;
    if (r.status == 202) {
      if (r.headers.find("Idempotent-Replayed: true") != std::string::npos) count.replayed++;
      return send_state::acknowledged;
    }
    if (r.status == 409) {
      count.conflicts++;
      if (!first_conflict) first_conflict = clock_type::now();
      if (clock_type::now() - *first_conflict > ambiguity_limit) {
        last_problem = fmt::format("{}: 409 for {} s: {}", text, ambiguity_limit.count(), r.body);
        return send_state::unconfirmed;
      }
    } else if (r.status != 0 && r.status < 500) {
      last_problem = fmt::format("{}: HTTP {} {}", text, r.status, r.body);
      return send_state::unconfirmed;  // a 4xx: the gateway refused it, which it should not
    }
    std::this_thread::sleep_for(100ms);  // gateway down (no answer) or 5xx (Redis away)
  }
}

struct reply_log {
  std::vector<int> messages;  // message numbers in delivery order
  int foreign = 0;            // replies whose text is not a message of this channel
  int turn_completes = 0;
};

// The replies the gateway delivered on a channel: its instance's event stream, written in
// the same MULTI as the PUBLISH of each reply (docs/protocol.md §5.6), so one entry is one
// delivery.
reply_log replies_of(const redis_deployment& redis, int c) {
  reply_log out;
  const auto prefix = fmt::format("c{:03}-m", c);
  for (const auto& line : lines_of(redis.cli({"XRANGE", "redis_platform:events:" + channel_name(c), "-", "+"}))) {
    if (line.rfind("{\"type\":\"turn_complete\"", 0) == 0) {
      out.turn_completes++;
      continue;
    }
    if (line.rfind("{\"type\":\"message\"", 0) != 0) continue;
    const auto at = line.find("\"text\":\"");
    if (at == std::string::npos) {
      out.foreign++;
      continue;
    }
    const auto text = line.substr(at + 8, line.find('"', at + 8) - at - 8);
    if (text.rfind(prefix, 0) != 0) {
      out.foreign++;
      continue;
    }
    try {
      out.messages.push_back(std::stoi(text.substr(prefix.size())));
    } catch (const std::exception&) {
      out.foreign++;
    }
  }
  return out;
}

long total_replies(const redis_deployment& redis, int channels) {
  std::vector<std::string> args{"EVAL",
                                "local n = 0 for _, k in ipairs(KEYS) do n = n + redis.call('XLEN', k) end return n",
                                std::to_string(channels)};
  for (int c = 0; c < channels; ++c) args.push_back("redis_platform:events:" + channel_name(c));
  try {
    return std::stol(redis.cli(args));
  } catch (const std::exception&) {
    return -1;  // Redis away for a moment
  }
}

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
  const auto http_port = free_port();
  const auto common = [&](std::vector<std::string> args) {
    for (const auto& a : redis.client_args()) args.push_back(a);
    args.push_back("--shutdown-timeout=" + std::to_string(o.shutdown_timeout));
    args.push_back("--log-level=" + o.log_level);
    return args;
  };
  role_process gateway("gateway",
                       common({o.binary, "--role=gateway", "--node-id=chaos-gateway",
                               "--http-port=" + std::to_string(http_port), "--webchat-enabled=false"}),
                       {std::string("SG_ADMIN_API_KEY=") + admin_key}, o.log_dir);
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
  gateway.start();
  tools.start();
  for (auto& w : workers) w->start();
  if (!wait_for_http(http_port, 60s, "/readyz")) {
    note("FAIL: the gateway was not ready within 60 s (log: {})", gateway.log_path());
    return 1;
  }
  for (int c = 0; c < o.channels; ++c) {
    const auto r = http_request(http_port, "POST", "/redis-platform/instances",
                                fmt::format(R"({{"instance_id":"{}"}})", channel_name(c)), admin_header);
    if (r.status != 201) {
      note("FAIL: creating instance {} answered {}: {}", channel_name(c), r.status, r.body);
      return 1;
    }
  }
  note("{} processes up, {} instances created", 2 + o.workers, o.channels);

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
          const auto st = send_one(http_port, c, m, state.count, 30s, problem);
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
    bool gateway_done = false, redis_done = false;
    auto next_kill = clock_type::now() + std::chrono::milliseconds(o.kill_interval_ms);
    std::uniform_int_distribution<int> pick(0, o.workers - 1);
    while (!state.sending_done) {
      std::this_thread::sleep_for(20ms);
      const int progress = state.count.acknowledged + state.count.unconfirmed;
      // A process that died without being killed is a finding: note it and bring it back.
      for (auto* p : {&gateway, &tools}) {
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
        // Preferably while a send is in flight (its answer is lost: the Idempotency-Key
        // retry must not inject it twice); down for a second, so that sends meet a closed
        // port and retry.
        const auto spin_until = clock_type::now() + 2s;
        while (state.count.in_flight == 0 && clock_type::now() < spin_until) std::this_thread::yield();
        const int in_flight = state.count.in_flight;
        gateway.crash_and_restart(1s);
        event(fmt::format("gateway SIGKILLed at {} of {} sends ({} in flight), restarted 1 s later", progress, total,
                          in_flight));
      }
      if (!redis_done && progress >= total * 2 / 3) {
        redis_done = true;
        event(fmt::format("at {} of {} sends: {}", progress, total, redis.disrupt()));
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
  // Each answered message leaves two events (the reply and turn_complete). Wait until the
  // count stops short of nothing, or the drain time is over.
  const long expected_events = 2L * state.count.acknowledged;
  const auto drain_until = clock_type::now() + std::chrono::seconds(o.drain_seconds);
  long events_now = 0;
  long last_reported = -1;
  while (clock_type::now() < drain_until) {
    events_now = total_replies(redis, o.channels);
    if (events_now >= expected_events) break;
    if (events_now / 200 != last_reported / 200) {
      note("draining: {} of {} reply events", events_now, expected_events);
      last_reported = events_now;
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
    const auto log = replies_of(redis, c);
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
  if (!troubled.empty())
    save("redis-streams.txt", {{"XRANGE", "sg:stream:inbound", "-", "+"}, {"XRANGE", "sg:stream:outbound:redis", "-", "+"}});
  for (std::size_t i = 0; i < troubled.size() && i < 20; ++i) {
    const auto name = channel_name(troubled[i]);
    save("redis-" + name + ".txt", {{"XRANGE", "redis_platform:events:" + name, "-", "+"},
                                    {"HGETALL", "sg:order:sg:stream:inbound:redis:" + name},
                                    {"HGETALL", "sg:order:sg:stream:outbound:redis:" + name},
                                    {"ZRANGE", "channel_msgs:redis:" + name, "0", "-1", "WITHSCORES"}});
  }

  const auto inbound_dlq = dead_letters_of(redis, "sg:stream:inbound:dlq");
  const auto outbound_dlq = dead_letters_of(redis, "sg:stream:outbound:redis:dlq");
  const auto tools_dlq = dead_letters_of(redis, "sg:stream:tools:dlq");
  if (inbound_dlq.other + outbound_dlq.other + tools_dlq.other > 0)
    save("redis-dlq.txt", {{"XRANGE", "sg:stream:inbound:dlq", "-", "+"},
                           {"XRANGE", "sg:stream:outbound:redis:dlq", "-", "+"},
                           {"XRANGE", "sg:stream:tools:dlq", "-", "+"}});
  const bool dlq_ok = inbound_dlq.poisoned == o.poison && inbound_dlq.other == 0 && outbound_dlq.poisoned == 0 &&
                      outbound_dlq.other == 0 && tools_dlq.poisoned == 0 && tools_dlq.other == 0;

  const std::vector<std::pair<std::string, std::string>> groups{{"sg:stream:inbound", "sg:workers"},
                                                                {"sg:stream:outbound:redis", "sg:gateway:redis"},
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
  std::vector<role_process*> all{&gateway, &tools};
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
  const bool passed = sends_ok && replies_ok && order_violations == 0 && dlq_ok && pending_ok && exits_ok;
  const auto elapsed = std::chrono::duration<double>(clock_type::now() - run_started).count();

  const auto row = [](const std::string& what, const std::string& value, bool ok) {
    std::printf("  %-34s %-40s %s\n", what.c_str(), value.c_str(), ok ? "ok" : "FAIL");
  };
  std::printf("\nchaos summary (mode %s, seed %u, %.0f s)\n", o.mode.c_str(), o.seed, elapsed);
  for (const auto& e : events) std::printf("  event: %s\n", e.c_str());
  std::printf("  worker kills: %d (every %d ms); Redis: %s\n", worker_kills, o.kill_interval_ms,
              o.mode == "sentinel" ? "master, replica, 3 sentinels" :
              (o.redis_restart == "kill" ? "AOF, appendfsync always" : "AOF, appendfsync everysec"));
  row("sent (acknowledged by the gateway)", fmt::format("{} of {} ({} replayed by Idempotency-Key, {} retries)",
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
