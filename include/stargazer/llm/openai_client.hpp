#pragma once
// The provider for any OpenAI-compatible chat completions API (OpenAI, OpenRouter,
// vLLM, llama.cpp, Ollama): POST {base_url}/chat/completions over http/client.hpp.
//
// Retries: a 429, a 5xx, a transport error or a timeout is retried up to `max_retries`
// times. The wait before retry n is capped exponential backoff with jitter, uniform in
// [d/2, d] for d = min(backoff_max, backoff_initial * 2^(n-1)); a Retry-After header
// (seconds or HTTP-date, on 429 and 5xx) replaces it, capped at `retry_after_max`. No
// retry starts whose wait would end more than `retry_budget` after the call began: the
// last failure is returned instead. Another 4xx is `rejected` at once. A 2xx whose body
// is not a chat completion is `bad_response` at once: the same request would get the
// same answer, and the tokens were probably paid for already. So is a reply over
// `max_response_bytes` or one that is not HTTP. A tool whose parameters_json is not a
// JSON object makes the call `rejected` before anything is sent.
//
// Failure details name the HTTP status and hold a bounded excerpt of the error body
// (the API's error message when it is JSON), never the API key.
//
// Metrics (when a registry is given), all labelled provider="openai":
//   stargazer_llm_requests_total{outcome}  ok, or a failure kind (after the retries)
//   stargazer_llm_retries_total{reason}    rate_limited, server_error, transport, timeout
//   stargazer_llm_request_seconds          histogram of complete() calls, retries included
//   stargazer_llm_tokens_total{kind}       prompt, completion (from the API's usage)
//
// Threading: call on the executor's thread; calls may overlap (one connection each).

#include "stargazer/llm/chat.hpp"

#include <utility>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace stargazer::metrics {
class registry;
}

namespace stargazer::llm {

struct openai_settings {
  std::string base_url = "https://openrouter.ai/api/v1";
  std::string api_key;                         // empty: no Authorization header (local servers)
  std::string model = "openai/gpt-4o-mini";    // for requests that name none
  // Sampling for requests that leave a value unset; unset here as well: not sent.
  std::optional<double> temperature;
  std::optional<int> max_tokens;
  std::optional<double> top_p;

  std::chrono::milliseconds connect_timeout{10'000};   // resolve, connect, TLS handshake
  std::chrono::milliseconds timeout{120'000};          // per attempt: request sent to response read
  int max_retries = 3;                                 // attempts after the first
  std::chrono::milliseconds backoff_initial{500};
  std::chrono::milliseconds backoff_max{8'000};
  std::chrono::milliseconds retry_after_max{60'000};   // a longer Retry-After is cut to this
  std::chrono::milliseconds retry_budget{300'000};     // see above
  std::size_t max_response_bytes = 8 * 1024 * 1024;
  std::size_t max_idle_connections = 4;                // keep-alive pool
  bool tls_verify = true;
  std::string tls_ca_file;                             // empty: the system store
};

class openai_client final : public client {
public:
  // Throws std::invalid_argument when base_url is not an http(s) URL, std::system_error
  // when the TLS CA file cannot be loaded.
  openai_client(boost::asio::any_io_executor ex, openai_settings settings, metrics::registry* metrics = nullptr);
  ~openai_client() override;

  std::string_view provider() const override { return "openai"; }
  std::string_view model() const override;
  boost::asio::awaitable<outcome> complete(request req) override;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

// --- Pure functions (no I/O), unit-tested and fuzzable ----------------------------------

// The JSON body of POST /chat/completions: model, messages, tools, sampling (request
// values first, then `defaults`). Throws std::invalid_argument when a tool's
// parameters_json is not a JSON object.
std::string encode_request(const request& req, const openai_settings& defaults);

// A chat completion response body: choices[0].message (content: string, null or an array
// of text parts; tool_calls), finish_reason, model, usage. Anything else is
// failure{bad_response} naming what was wrong.
outcome parse_response(std::string_view body);

// A message's `name` as the API accepts it (^[a-zA-Z0-9_-]{1,64}$): every other character
// (a UTF-8 sequence counts as one) becomes '_'. Empty stays empty (not sent).
std::string participant_name(std::string_view name);

// For failure details: the API's error message when `body` is JSON with an "error", else
// the body with control characters escaped; at most `limit` bytes, and every occurrence
// of `secret` (when not empty) replaced by "<redacted>".
std::string error_excerpt(std::string_view body, std::string_view secret = {}, std::size_t limit = 300);

// The wait before retry `retry` (1 for the first), `unit_random` in [0, 1).
std::chrono::milliseconds backoff_delay(const openai_settings& s, int retry, double unit_random);

}  // namespace stargazer::llm
