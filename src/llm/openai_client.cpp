#include "stargazer/llm/openai_client.hpp"

#include "stargazer/core/error.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/http/client.hpp"

#include "detail/metrics.hpp"

#include <boost/asio.hpp>

#include <fmt/format.h>
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>

namespace stargazer::llm {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;
using json_writer = rapidjson::Writer<rapidjson::StringBuffer>;

namespace {

constexpr auto parse_flags = rapidjson::kParseIterativeFlag;  // no recursion on hostile nesting

// Length of the valid UTF-8 sequence at the start of `s`, 0 when it is not one.
std::size_t utf8_sequence(std::string_view s) {
  const auto b0 = static_cast<unsigned char>(s[0]);
  if (b0 < 0x80) return 1;
  std::size_t n = 0;
  std::uint32_t cp = 0;
  if ((b0 & 0xE0) == 0xC0) n = 2, cp = b0 & 0x1F;
  else if ((b0 & 0xF0) == 0xE0) n = 3, cp = b0 & 0x0F;
  else if ((b0 & 0xF8) == 0xF0) n = 4, cp = b0 & 0x07;
  else return 0;
  if (s.size() < n) return 0;
  for (std::size_t i = 1; i < n; ++i) {
    const auto b = static_cast<unsigned char>(s[i]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  static constexpr std::uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < smallest[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

// JSON needs valid UTF-8: an invalid byte becomes U+FFFD (user text may arrive truncated
// mid-character).
void write_text(json_writer& w, std::string_view text) {
  std::string repaired;
  for (std::size_t i = 0; i < text.size();) {
    const auto n = utf8_sequence(text.substr(i));
    if (n == 0) {
      if (repaired.empty()) repaired.assign(text.substr(0, i));
      repaired += "\xEF\xBF\xBD";
      ++i;
      continue;
    }
    if (!repaired.empty()) repaired.append(text.substr(i, n));
    i += n;
  }
  if (repaired.empty()) w.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
  else w.String(repaired.data(), static_cast<rapidjson::SizeType>(repaired.size()));
}

void write_key_text(json_writer& w, const char* key, std::string_view text) {
  w.Key(key);
  write_text(w, text);
}

std::string_view text_of(const rapidjson::Value& v) { return {v.GetString(), v.GetStringLength()}; }

const rapidjson::Value* member(const rapidjson::Value& object, const char* name) {
  if (!object.IsObject()) return nullptr;
  const auto it = object.FindMember(name);
  return it == object.MemberEnd() ? nullptr : &it->value;
}

std::string serialize(const rapidjson::Value& v) {
  rapidjson::StringBuffer buffer;
  json_writer w(buffer);
  v.Accept(w);
  return {buffer.GetString(), buffer.GetSize()};
}

failure bad(std::string detail) { return failure{failure::kind::bad_response, 0, std::move(detail)}; }

std::int64_t token_count(const rapidjson::Value* usage, const char* name) {
  if (usage == nullptr) return 0;
  const auto* v = member(*usage, name);
  if (v == nullptr) return 0;
  if (v->IsInt64()) return std::max<std::int64_t>(0, v->GetInt64());
  if (v->IsNumber()) return std::max<std::int64_t>(0, static_cast<std::int64_t>(v->GetDouble()));
  return 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Pure functions

std::string participant_name(std::string_view name) {
  std::string out;
  for (std::size_t i = 0; i < name.size() && out.size() < 64;) {
    const char c = name[i];
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                         c == '-';
    out.push_back(allowed ? c : '_');
    i += std::max<std::size_t>(1, utf8_sequence(name.substr(i)));
  }
  return out;
}

std::string encode_request(const request& req, const openai_settings& defaults) {
  rapidjson::StringBuffer buffer;
  json_writer w(buffer);
  w.StartObject();
  write_key_text(w, "model", req.model.empty() ? defaults.model : req.model);

  w.Key("messages");
  w.StartArray();
  for (const auto& m : req.messages) {
    w.StartObject();
    write_key_text(w, "role", to_string(m.role));
    w.Key("content");
    // An assistant turn that only calls tools has null content (the API's own shape).
    if (m.role == role::assistant && m.content.empty() && !m.tool_calls.empty()) w.Null();
    // Models read who spoke from the text; the `name` field alone is often ignored.
    else if (m.role == role::user && !m.name.empty()) write_text(w, m.name + ": " + m.content);
    else write_text(w, m.content);
    if (m.role != role::tool) {
      if (const auto name = participant_name(m.name); !name.empty()) write_key_text(w, "name", name);
    }
    if (m.role == role::assistant && !m.tool_calls.empty()) {
      w.Key("tool_calls");
      w.StartArray();
      for (const auto& call : m.tool_calls) {
        w.StartObject();
        write_key_text(w, "id", call.id);
        write_key_text(w, "type", "function");
        w.Key("function");
        w.StartObject();
        write_key_text(w, "name", call.name);
        write_key_text(w, "arguments", call.arguments_json);  // a JSON text, sent as a string
        w.EndObject();
        w.EndObject();
      }
      w.EndArray();
    }
    if (m.role == role::tool) write_key_text(w, "tool_call_id", m.tool_call_id);
    w.EndObject();
  }
  w.EndArray();

  if (!req.tools.empty()) {
    w.Key("tools");
    w.StartArray();
    for (const auto& tool : req.tools) {
      rapidjson::Document parameters;
      parameters.Parse<parse_flags>(tool.parameters_json.data(), tool.parameters_json.size());
      if (parameters.HasParseError() || !parameters.IsObject())
        throw std::invalid_argument(fmt::format("tool '{}': parameters_json is not a JSON object", tool.name));
      w.StartObject();
      write_key_text(w, "type", "function");
      w.Key("function");
      w.StartObject();
      write_key_text(w, "name", tool.name);
      if (!tool.description.empty()) write_key_text(w, "description", tool.description);
      w.Key("parameters");
      parameters.Accept(w);
      w.EndObject();
      w.EndObject();
    }
    w.EndArray();
  }

  if (const auto t = req.temperature ? req.temperature : defaults.temperature) {
    w.Key("temperature");
    w.Double(*t);
  }
  if (const auto n = req.max_tokens ? req.max_tokens : defaults.max_tokens) {
    w.Key("max_tokens");
    w.Int(*n);
  }
  if (const auto p = req.top_p ? req.top_p : defaults.top_p) {
    w.Key("top_p");
    w.Double(*p);
  }
  w.EndObject();
  return {buffer.GetString(), buffer.GetSize()};
}

outcome parse_response(std::string_view body) {
  rapidjson::Document doc;
  doc.Parse<parse_flags>(body.data(), body.size());
  if (doc.HasParseError())
    return bad(fmt::format("invalid JSON at offset {}: {}", doc.GetErrorOffset(),
                           rapidjson::GetParseError_En(doc.GetParseError())));
  if (!doc.IsObject()) return bad("the body is not a JSON object");

  const auto* choices = member(doc, "choices");
  if (choices == nullptr || !choices->IsArray() || choices->Empty()) {
    // Some gateways answer 200 with an error object.
    if (const auto* error = member(doc, "error"))
      return bad("an error instead of a completion: " + error_excerpt(serialize(*error)));
    return bad("no choices in the completion");
  }
  const auto& choice = (*choices)[0];
  const auto* message = member(choice, "message");
  if (message == nullptr || !message->IsObject()) return bad("choices[0] has no message object");

  completion out;
  if (const auto* content = member(*message, "content"); content != nullptr && !content->IsNull()) {
    if (content->IsString()) {
      out.content = std::string(text_of(*content));
    } else if (content->IsArray()) {  // content parts: concatenate the text ones
      for (const auto& part : content->GetArray())
        if (const auto* text = member(part, "text"); text != nullptr && text->IsString()) out.content += text_of(*text);
    } else {
      return bad("choices[0].message.content is neither a string nor null");
    }
  }

  if (const auto* calls = member(*message, "tool_calls"); calls != nullptr && !calls->IsNull()) {
    if (!calls->IsArray()) return bad("choices[0].message.tool_calls is not an array");
    for (rapidjson::SizeType i = 0; i < calls->Size(); ++i) {
      const auto& call = (*calls)[i];
      const auto* function = member(call, "function");
      const auto* name = function != nullptr ? member(*function, "name") : nullptr;
      if (name == nullptr || !name->IsString() || name->GetStringLength() == 0)
        return bad(fmt::format("tool_calls[{}] has no function name", i));
      tool_call tc;
      tc.name = std::string(text_of(*name));
      if (const auto* id = member(call, "id"); id != nullptr && id->IsString() && id->GetStringLength() > 0)
        tc.id = std::string(text_of(*id));
      else
        tc.id = fmt::format("call_{}", i);  // some providers omit ids; the tool message needs one
      const auto* arguments = member(*function, "arguments");
      if (arguments == nullptr || arguments->IsNull()) tc.arguments_json = "{}";
      else if (arguments->IsString()) tc.arguments_json = std::string(text_of(*arguments));
      else tc.arguments_json = serialize(*arguments);  // non-conforming: an object instead of its text
      out.tool_calls.push_back(std::move(tc));
    }
  }

  if (const auto* reason = member(choice, "finish_reason"); reason != nullptr && reason->IsString())
    out.finish_reason = std::string(text_of(*reason));
  if (const auto* model = member(doc, "model"); model != nullptr && model->IsString())
    out.model = std::string(text_of(*model));
  const auto* usage = member(doc, "usage");
  out.usage.prompt_tokens = token_count(usage, "prompt_tokens");
  out.usage.completion_tokens = token_count(usage, "completion_tokens");
  return out;
}

std::string error_excerpt(std::string_view body, std::string_view secret, std::size_t limit) {
  std::string text;
  rapidjson::Document doc;
  doc.Parse<parse_flags>(body.data(), body.size());
  if (!doc.HasParseError()) {
    const rapidjson::Value* error = member(doc, "error");
    if (error == nullptr && doc.IsObject() && member(doc, "message") != nullptr) error = &doc;
    if (error != nullptr && error->IsString()) {
      text = std::string(text_of(*error));
    } else if (error != nullptr) {
      if (const auto* m = member(*error, "message"); m != nullptr && m->IsString()) text = std::string(text_of(*m));
      for (const char* extra : {"type", "code"})
        if (const auto* v = member(*error, extra); v != nullptr && (v->IsString() || v->IsNumber()))
          text += fmt::format(" ({}: {})", extra, v->IsString() ? std::string(text_of(*v)) : serialize(*v));
    }
  }
  if (text.empty()) text = std::string(body);

  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n' || c == '\r' || c == '\t') out.push_back(' ');
    else if (u < 0x20 || u == 0x7F) out += fmt::format("\\x{:02x}", u);
    else out.push_back(c);
  }
  if (!secret.empty()) {
    for (auto at = out.find(secret); at != std::string::npos; at = out.find(secret, at + 10))
      out.replace(at, secret.size(), "<redacted>");
  }
  if (out.size() > limit) {
    std::size_t cut = limit;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;  // not mid-character
    out.resize(cut);
    out += "...";
  }
  return out;
}

std::chrono::milliseconds backoff_delay(const openai_settings& s, int retry, double unit_random) {
  const double exponent = std::clamp(retry - 1, 0, 30);
  const double full = std::min(static_cast<double>(s.backoff_max.count()),
                               static_cast<double>(s.backoff_initial.count()) * std::pow(2.0, exponent));
  const double u = std::clamp(unit_random, 0.0, 1.0);
  return std::chrono::milliseconds(static_cast<std::int64_t>(full / 2 + full / 2 * u));
}

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
