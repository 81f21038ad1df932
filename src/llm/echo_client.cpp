#include "stargazer/llm/echo_client.hpp"

#include "stargazer/core/metrics.hpp"
#include "stargazer/core/strings.hpp"

#include "detail/metrics.hpp"

#include <boost/asio.hpp>

namespace stargazer::llm {

namespace asio = boost::asio;

namespace {

std::int64_t word_count(std::string_view text) {
  std::int64_t words = 0;
  bool in_word = false;
  for (const char c : text) {
    const bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
    if (!space && !in_word) ++words;
    in_word = !space;
  }
  return words;
}

// Whether `text` contains `name`, ASCII letters compared case-insensitively.
bool names(std::string_view text, std::string_view name) {
  return !name.empty() && ascii_lower(text).find(ascii_lower(name)) != std::string::npos;
}

}  // namespace

completion echo_completion(const request& req) {
  completion out;
  std::string last_user;
  for (auto it = req.messages.rbegin(); it != req.messages.rend(); ++it) {
    if (it->role == role::user) {
      last_user = it->content;
      break;
    }
  }
  switch (req.kind) {
    case request_kind::triage:
      out.content = names(last_user, req.bot_name) ? "yes" : "no";
      break;
    case request_kind::heartbeat:
      break;  // nothing to say
    case request_kind::reply:
    case request_kind::status:
      out.content = last_user.empty() ? std::string(echo_client::no_text) : std::move(last_user);
      break;
  }
  out.finish_reason = "stop";
  out.model = "echo";
  for (const auto& m : req.messages) out.usage.prompt_tokens += word_count(m.content);
  out.usage.completion_tokens = word_count(out.content);
  return out;
}

struct echo_client::impl {
  impl(asio::any_io_executor ex, echo_settings s, metrics::registry* m)
      : executor(std::move(ex)), settings(s), metrics(m, "echo") {}

  asio::any_io_executor executor;
  echo_settings settings;
  detail::provider_metrics metrics;
};

echo_client::echo_client(asio::any_io_executor ex, echo_settings settings, metrics::registry* metrics)
    : impl_(std::make_shared<impl>(std::move(ex), settings, metrics)) {}

echo_client::~echo_client() = default;

asio::awaitable<outcome> echo_client::complete(request req) {
  auto self = impl_;
  const auto started = std::chrono::steady_clock::now();
  if (self->settings.delay.count() > 0) {
    asio::steady_timer timer(self->executor, self->settings.delay);
    co_await timer.async_wait(asio::use_awaitable);
  }
  outcome result = echo_completion(req);
  self->metrics.finished(result, std::chrono::steady_clock::now() - started);
  detail::llm_log().log(log::level::debug, {{"trace_id", req.trace_id}}, "echo completion");
  co_return result;
}

}  // namespace stargazer::llm
