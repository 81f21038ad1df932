#include "stargazer/llm/chat.hpp"

#include "stargazer/core/metrics.hpp"

#include "detail/metrics.hpp"

namespace stargazer::llm {

std::string_view to_string(role r) {
  switch (r) {
    case role::system: return "system";
    case role::user: return "user";
    case role::assistant: return "assistant";
    case role::tool: return "tool";
  }
  return "user";
}

std::string_view to_string(failure::kind k) {
  switch (k) {
    case failure::kind::transport: return "transport";
    case failure::kind::timeout: return "timeout";
    case failure::kind::rate_limited: return "rate_limited";
    case failure::kind::server_error: return "server_error";
    case failure::kind::rejected: return "rejected";
    case failure::kind::bad_response: return "bad_response";
  }
  return "transport";
}

namespace detail {

const log::logger& llm_log() {
  static const log::logger instance("llm");
  return instance;
}

namespace {

// LLM calls take seconds, not the HTTP server's milliseconds.
std::vector<double> llm_buckets() { return {0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300}; }

}  // namespace

provider_metrics::provider_metrics(metrics::registry* registry, const std::string& provider) {
  if (registry == nullptr) return;
  auto& r = *registry;
  const char* requests_help = "LLM completion calls by provider and outcome (after retries)";
  ok_ = &r.make_counter("stargazer_llm_requests_total", requests_help, {{"provider", provider}, {"outcome", "ok"}});
  for (std::size_t i = 0; i < kinds; ++i) {
    const auto k = std::string(to_string(static_cast<failure::kind>(i)));
    failed_[i] = &r.make_counter("stargazer_llm_requests_total", requests_help, {{"provider", provider}, {"outcome", k}});
    const auto kind = static_cast<failure::kind>(i);
    if (kind == failure::kind::rejected || kind == failure::kind::bad_response) continue;  // never retried
    retries_[i] = &r.make_counter("stargazer_llm_retries_total", "LLM request retries by provider and reason",
                                  {{"provider", provider}, {"reason", k}});
  }
  const char* tokens_help = "LLM tokens reported by the provider, by kind";
  prompt_tokens_ = &r.make_counter("stargazer_llm_tokens_total", tokens_help, {{"provider", provider}, {"kind", "prompt"}});
  completion_tokens_ =
      &r.make_counter("stargazer_llm_tokens_total", tokens_help, {{"provider", provider}, {"kind", "completion"}});
  seconds_ = &r.make_histogram("stargazer_llm_request_seconds", "LLM completion call duration, retries included",
                               llm_buckets(), {{"provider", provider}});
}

void provider_metrics::finished(const outcome& result, std::chrono::steady_clock::duration took) {
  if (seconds_ == nullptr) return;
  seconds_->observe(std::chrono::duration<double>(took).count());
  if (const auto* c = std::get_if<completion>(&result)) {
    ok_->inc();
    if (c->usage.prompt_tokens > 0) prompt_tokens_->inc(static_cast<std::uint64_t>(c->usage.prompt_tokens));
    if (c->usage.completion_tokens > 0) completion_tokens_->inc(static_cast<std::uint64_t>(c->usage.completion_tokens));
  } else {
    failed_[static_cast<std::size_t>(std::get<failure>(result).what)]->inc();
  }
}

void provider_metrics::retried(failure::kind reason) {
  if (auto* c = retries_[static_cast<std::size_t>(reason)]) c->inc();
}

}  // namespace detail
}  // namespace stargazer::llm
