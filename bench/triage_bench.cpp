// What the reply policy costs per unaddressed message (issue 18): N messages through the
// message processor with its channel state (real Redis, the offline echo model behind a
// counter, a recording adapter), one scenario per channel:
//   addressed policy  stored, never answered;
//   triage, no        one triage call (the echo model says yes only when the text names
//                     the bot), nothing sent;
//   triage, yes       the triage call and the reply (no cool-down);
//   always            the reply without a triage call;
//   addressed message the plain turn, for comparison.
// Prints model calls, Redis commands (INFO commandstats, script-internal calls included)
// and time per message; messages go one after the other, so the time is a turn's latency
// with a model that answers at once.

#include "bench.hpp"
#include "bench_support.hpp"

#include "stargazer/llm/echo_client.hpp"
#include "stargazer/platform/message_cache.hpp"
#include "stargazer/redis/connection.hpp"
#include "stargazer/worker/channel_state.hpp"
#include "stargazer/worker/message_processor.hpp"

#include "recording_adapter.hpp"
#include "redis_server.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <chrono>
#include <memory>

namespace stargazer::bench {

namespace asio = boost::asio;

namespace {

// The model the processor sees: the echo model, its calls counted by kind.
class counting_model final : public llm::client {
public:
  explicit counting_model(asio::any_io_executor ex) : inner_(ex, llm::echo_settings{}, nullptr) {}
  std::string_view provider() const override { return inner_.provider(); }
  std::string_view model() const override { return inner_.model(); }
  asio::awaitable<llm::outcome> complete(llm::request req) override {
    ++calls;
    if (req.kind == llm::request_kind::triage) ++triage_calls;
    co_return co_await inner_.complete(std::move(req));
  }
  std::uint64_t calls = 0;
  std::uint64_t triage_calls = 0;

private:
  llm::echo_client inner_;
};

struct scenario {
  const char* name;
  worker::reply_policy policy;
  bool addressed;
  const char* text;  // {} = the message number
};

}  // namespace

int triage(const args& a) {
  const int messages = std::stoi(option(a, "--messages", "2000"));
  if (messages < 1) {
    fmt::print(stderr, "triage: --messages must be positive\n");
    return 2;
  }
  const scenario scenarios[] = {
      {"addressed policy", worker::reply_policy::addressed, false, "just chatting, message {}"},
      {"triage, answered no", worker::reply_policy::triage, false, "just chatting, message {}"},
      {"triage, answered yes", worker::reply_policy::triage, false, "what does star think of message {}"},
      {"always", worker::reply_policy::always, false, "just chatting, message {}"},
      {"addressed message", worker::reply_policy::triage, true, "star, answer message {}"},
  };
  try {
    test::redis_server redis;
    asio::io_context io;
    redis::connection conn(io.get_executor(), redis::settings_from_url(redis.url()));
    conn.start();
    platform::message_cache cache(conn);
    worker::channel_state channels(conn);
    auto model = std::make_shared<counting_model>(io.get_executor());
    fmt::print("reply policy cost: {} messages per scenario, one after the other, echo model, Redis on TCP\n",
               messages);
    fmt::print("  {:<22} {:>13} {:>15} {:>13} {:>9}\n", "scenario", "model calls", "Redis commands", "us/message",
               "replies");
    bool done = false;
    int failures = 0;
    asio::co_spawn(io, [&]() -> asio::awaitable<void> {
      int channel = 0;
      for (const auto& sc : scenarios) {
        worker::processor_settings s;
        s.bot_name = "Star";
        s.replies = {sc.policy, {}};
        s.unprompted_cooldown = std::chrono::seconds(0);
        s.typing_delay = std::chrono::milliseconds(0);
        worker::message_processor processor(cache, model, s, nullptr, nullptr, &channels);
        test::recording_adapter adapter("redis");
        const auto channel_id = fmt::format("bench-{}", channel++);
        const auto calls_before = model->calls;
        const auto redis_before = co_await read_counters(conn);
        const auto started = std::chrono::steady_clock::now();
        for (int i = 0; i < messages; ++i) {
          worker::incoming_message m;
          m.platform = "redis";
          m.channel_id = channel_id;
          m.user_id = "u1";
          m.user_name = "Ada";
          m.text = fmt::format(fmt::runtime(sc.text), i);
          m.is_addressed = sc.addressed;
          m.message_id = fmt::format("m{}", i);
          m.trace_id = m.message_id;
          m.timestamp = std::chrono::system_clock::now();
          const auto outcome = co_await processor.handle(m, adapter);
          if (outcome.what != bus::outcome::kind::ack) ++failures;
        }
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        const auto redis_after = co_await read_counters(conn);
        // INFO itself is one command of the delta.
        const double commands = static_cast<double>(redis_after.total() - redis_before.total() - 1) / messages;
        std::size_t replies = 0;
        for (const auto& c : adapter.calls) replies += c.kind == "send" ? 1 : 0;
        fmt::print("  {:<22} {:>13.2f} {:>15.2f} {:>13.0f} {:>9}\n", sc.name,
                   static_cast<double>(model->calls - calls_before) / messages, commands, seconds * 1e6 / messages,
                   replies);
      }
      done = true;
    }, asio::detached);
    while (!done) io.run_one();
    conn.stop();
    if (failures > 0) {
      fmt::print(stderr, "triage: {} turns did not end in an ack\n", failures);
      return 1;
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "triage: {}\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace stargazer::bench
