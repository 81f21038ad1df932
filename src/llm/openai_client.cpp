#include "stargazer/llm/openai_client.hpp"

#include "stargazer/core/error.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/http/client.hpp"

#include "detail/metrics.hpp"

#include <boost/asio.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>

namespace stargazer::llm {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------
// The client

namespace {

http::client_settings http_settings(const openai_settings& s) {
  http::client_settings h;
  h.connect_timeout = s.connect_timeout;
  h.response_timeout = s.timeout;
  h.max_response_bytes = s.max_response_bytes;
  h.max_idle_connections = s.max_idle_connections;
  h.tls_verify = s.tls_verify;
  h.tls_ca_file = s.tls_ca_file;
  h.user_agent = "stargazer/" STARGAZER_VERSION;
  return h;
}

http::base_url parse_or_throw(const std::string& url) {
  std::string error;
  auto parsed = http::parse_base_url(url, &error);
  if (!parsed) throw std::invalid_argument("LLM base URL: " + error);
  return *parsed;
}

bool retryable(failure::kind k) {
  return k == failure::kind::transport || k == failure::kind::timeout || k == failure::kind::rate_limited ||
         k == failure::kind::server_error;
}

}  // namespace

struct openai_client::impl {
  impl(asio::any_io_executor ex, openai_settings s, metrics::registry* m)
      : executor(ex),
        settings(std::move(s)),
        origin(parse_or_throw(settings.base_url)),
        transport(ex, origin, http_settings(settings)),
        endpoint(origin.to_string() + "/chat/completions"),
        metrics(m, "openai"),
        rng(std::random_device{}()) {}

  asio::any_io_executor executor;
  openai_settings settings;
  http::base_url origin;
  http::client transport;
  std::string endpoint;  // for details and logs
  detail::provider_metrics metrics;
  std::minstd_rand rng;

  // One attempt: a completion, or why not (with the server's Retry-After, if any).
  struct attempt_result {
    outcome result;
    std::optional<std::chrono::milliseconds> retry_after;
  };

  asio::awaitable<attempt_result> attempt(http::request req) {
    auto sent = co_await transport.send(std::move(req));
    if (!sent) {
      const auto ec = sent.error();
      auto kind = failure::kind::transport;
      if (http::is_timeout(ec)) kind = failure::kind::timeout;
      // Too large, or not HTTP at all (e.g. http:// to a TLS port): the same again next time.
      if (ec == make_error_code(errc::reply_too_large) || ec == make_error_code(errc::protocol_error))
        kind = failure::kind::bad_response;
      co_return attempt_result{failure{kind, 0, fmt::format("POST {}: {}", endpoint, ec.message())}, std::nullopt};
    }
    const auto& res = *sent;
    if (res.status >= 200 && res.status < 300) {
      auto parsed = parse_response(res.body);
      if (auto* f = std::get_if<failure>(&parsed)) {
        f->http_status = static_cast<int>(res.status);
        f->detail = fmt::format("HTTP {} from {}: {}; body: {}", res.status, endpoint, f->detail,
                                error_excerpt(res.body, settings.api_key, 200));
      }
      co_return attempt_result{std::move(parsed), std::nullopt};
    }
    failure f;
    f.http_status = static_cast<int>(res.status);
    if (res.status == 429) f.what = failure::kind::rate_limited;
    else if (res.status >= 500) f.what = failure::kind::server_error;
    else f.what = failure::kind::rejected;
    f.detail = fmt::format("HTTP {} from {}: {}", res.status, endpoint, error_excerpt(res.body, settings.api_key));
    std::optional<std::chrono::milliseconds> retry_after;
    if (const auto value = res.header("retry-after"))
      retry_after = http::parse_retry_after(*value, std::chrono::system_clock::now());
    co_return attempt_result{std::move(f), retry_after};
  }

  asio::awaitable<outcome> complete(request req) {
    const auto started = clock_type::now();
    const log::field trace{"trace_id", req.trace_id};
    http::request hreq;
    hreq.verb = http::method::post;
    hreq.target = "/chat/completions";
    try {
      hreq.body = encode_request(req, settings);
    } catch (const std::invalid_argument& e) {
      outcome refused = failure{failure::kind::rejected, 0, e.what()};
      metrics.finished(refused, clock_type::now() - started);
      co_return refused;
    }
    hreq.headers.emplace_back("content-type", "application/json");
    hreq.headers.emplace_back("accept", "application/json");
    if (!settings.api_key.empty()) hreq.headers.emplace_back("authorization", "Bearer " + settings.api_key);

    outcome last = failure{};
    int attempts = 0;
    for (int attempt_no = 0;; ++attempt_no) {
      auto copy = hreq;
      auto answer = co_await attempt(std::move(copy));
      ++attempts;
      last = std::move(answer.result);
      const auto retry_after = answer.retry_after;
      const auto* f = std::get_if<failure>(&last);
      if (f == nullptr || !retryable(f->what) || attempt_no >= settings.max_retries) break;

      const int retry = attempt_no + 1;
      std::uniform_real_distribution<double> unit(0.0, 1.0);
      auto wait = backoff_delay(settings, retry, unit(rng));
      if (retry_after) wait = std::min(*retry_after, settings.retry_after_max);
      const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - started);
      if (elapsed + wait > settings.retry_budget) {
        detail::llm_log().log(log::level::warn, {trace}, "no retry: waiting {} ms would pass the {} ms budget ({})",
                              wait.count(), settings.retry_budget.count(), f->detail);
        break;
      }
      metrics.retried(f->what);
      detail::llm_log().log(log::level::warn, {trace}, "{} ({}); retry {}/{} in {} ms", to_string(f->what), f->detail,
                            retry, settings.max_retries, wait.count());
      asio::steady_timer timer(executor, wait);
      co_await timer.async_wait(asio::use_awaitable);
    }

    if (auto* f = std::get_if<failure>(&last); f != nullptr && attempts > 1)
      f->detail += fmt::format(" (after {} attempts)", attempts);
    const auto took = clock_type::now() - started;
    metrics.finished(last, took);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(took).count();
    if (const auto* c = std::get_if<completion>(&last)) {
      detail::llm_log().log(log::level::debug, {trace},
                            "completion from {} in {} ms: finish_reason={} tool_calls={} tokens={}+{}", c->model, ms,
                            c->finish_reason, c->tool_calls.size(), c->usage.prompt_tokens, c->usage.completion_tokens);
    } else {
      auto& f = std::get<failure>(last);
      detail::llm_log().log(log::level::warn, {trace}, "completion failed after {} ms: {}: {}", ms, to_string(f.what),
                            f.detail);
    }
    co_return last;
  }
};

openai_client::openai_client(asio::any_io_executor ex, openai_settings settings, metrics::registry* metrics)
    : impl_(std::make_shared<impl>(std::move(ex), std::move(settings), metrics)) {}

openai_client::~openai_client() = default;

std::string_view openai_client::model() const { return impl_->settings.model; }

asio::awaitable<outcome> openai_client::complete(request req) {
  auto self = impl_;  // in-flight calls outlive the client object safely
  co_return co_await self->complete(std::move(req));
}

}  // namespace stargazer::llm
