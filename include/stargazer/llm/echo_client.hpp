#pragma once
// The offline, deterministic provider: the reply repeats the text of the last user
// message ("(no text)" when it is empty or there is none), after an optional simulated
// model latency on a timer (non-blocking: many turns overlap). It never calls tools.
// By request kind: a triage request is answered "yes" when the last user message
// contains request::bot_name (ASCII case-insensitive), else "no"; a heartbeat request is
// answered with nothing (an empty reply: the bot stays silent).
// Usage counts are word counts: every message's content for the prompt, the reply for
// the completion. Reports the same metrics as openai_client, with provider="echo".
//
// Threading: call on the executor's thread; calls may overlap.

#include "stargazer/llm/chat.hpp"

#include <utility>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <memory>
#include <string_view>

namespace stargazer::metrics {
class registry;
}

namespace stargazer::llm {

struct echo_settings {
  std::chrono::milliseconds delay{0};  // simulated model latency per completion
};

class echo_client final : public client {
public:
  static constexpr std::string_view no_text = "(no text)";

  explicit echo_client(boost::asio::any_io_executor ex, echo_settings settings = {},
                       metrics::registry* metrics = nullptr);
  ~echo_client() override;

  std::string_view provider() const override { return "echo"; }
  std::string_view model() const override { return "echo"; }
  boost::asio::awaitable<outcome> complete(request req) override;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

// The completion echo_client returns for `req`, without the delay (pure).
completion echo_completion(const request& req);

}  // namespace stargazer::llm
