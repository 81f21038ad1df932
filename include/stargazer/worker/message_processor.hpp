#pragma once
// The message processor: stores what it
// receives in the message cache (after backfilling a channel it has never seen from the
// platform's history), runs chat commands, answers addressed messages and, by the reply
// policy, others (docs/architecture.md, "Group chats"), gives the model the channel's
// recent conversation with user attribution and a system prompt, runs the tool-call loop
// (bounded rounds) with a typing indicator, and sends the reply through the adapter. A
// failed model call gives the user a short apology (none for an unprompted reply) and is
// not retried; a failed Redis write is (the consumer reclaims the entry; sends are
// idempotent by message key). A turn that sends nothing still ends with the inbound
// consumer's turn_complete, so a `wait=true` caller gets an empty answer. Before a turn's
// first model call the quotas are checked: a turn held back stays in the cache, is
// acknowledged, and, when it was addressed, gets one polite notice per window, then
// silence. After its model calls, the turn's tokens are added to the channel's usage of
// the day (one pipelined round trip).

#include "stargazer/bus/stream_consumer.hpp"
#include "stargazer/llm/chat.hpp"
#include "stargazer/platform/message_cache.hpp"
#include "stargazer/platform/platform_adapter.hpp"
#include "stargazer/platform/quota.hpp"
#include "stargazer/tools/runner.hpp"
#include "stargazer/worker/channel_state.hpp"
#include "stargazer/worker/group_chat_rules.hpp"
#include "stargazer/worker/incoming_message.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace stargazer::metrics {
class registry;
}

namespace stargazer::worker {

// What a tool run in this turn is told of it (tools/runner.hpp).
tools::call_context tool_context_of(const incoming_message& m, platform::platform_adapter& adapter);

struct processor_settings {
  std::string bot_name = "Star";
  std::string system_prompt = std::string();  // the template; empty: the built-in one
  std::size_t history_messages = 20;
  int max_tool_rounds = 5;
  std::chrono::milliseconds typing_delay{250};  // 0: typing starts before the model call
  std::string model;  // empty: the provider's
  double temperature = 0.7;
  int max_tokens = 1024;
  double top_p = 1.0;

  // Group chats. The component's default policy is the conservative `addressed`; the
  // configuration's (--reply-policy) is triage.
  reply_policy_spec replies{reply_policy::addressed, {}};
  std::string triage_model;  // empty: `model`
  int triage_max_tokens = 5;
  std::chrono::seconds unprompted_cooldown{120};  // 0: none
  std::string command_prefix = "!";               // empty: no commands
  privilege_settings privileges;
  std::chrono::seconds backfill_marker_ttl{7 * 24 * 3600};

  // Quotas (docs/operations.md, "Quotas and usage"), checked before a turn's first model
  // call, except on the platforms listed here, whose gateway checks them when a message
  // arrives (the Redis platform's REST API answers 429): a turn must not pay twice.
  platform::quota_settings quotas;
  std::vector<std::string> quotas_checked_by_gateway{"redis"};
};

// What a turn held back by a quota says, once per window, when it was addressed.
using platform::quota_notice_text;

enum class heartbeat_outcome { sent, silent, model_failed, send_failed };

inline constexpr std::string_view apology_text =
    "Sorry, I couldn't come up with an answer just now. Please try again in a moment.";

class message_processor {
public:
  // Without `channels` (tests of the plain turn) there are no commands, no per-channel
  // state (modes, quiet, cool-down, forget), no backfill and no heartbeat index. Without
  // `quotas` no quota is checked and no usage is recorded.
  message_processor(platform::message_cache& cache, std::shared_ptr<llm::client> model, processor_settings settings,
                    tools::tool_runner* tools = nullptr, metrics::registry* metrics = nullptr,
                    channel_state* channels = nullptr, platform::quotas* quotas = nullptr);
  ~message_processor();

  // Takes effect from the next turn; turns in flight finish with what they started with.
  void reconfigure(processor_settings settings, std::shared_ptr<llm::client> model);
  const processor_settings& settings() const;
  const llm::client& model() const;
  // The current model, for calls outside turns (the status line).
  std::shared_ptr<llm::client> shared_model() const;

  boost::asio::awaitable<bus::outcome> handle(const incoming_message& m, platform::platform_adapter& adapter);

  // A heartbeat turn in a quiet channel: the model sees its recent history and is invited
  // to say something useful or nothing; a message is sent with `message_key`.
  boost::asio::awaitable<heartbeat_outcome> heartbeat(const channel_ref& channel,
                                                      platform::platform_adapter& adapter,
                                                      const std::string& message_key);

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::worker
