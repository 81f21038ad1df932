#include "stargazer/platform/redis/redis_platform_api.hpp"

#include "stargazer/core/error.hpp"
#include "stargazer/core/json.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/strings.hpp"
#include "stargazer/http/router.hpp"
#include "stargazer/platform/identity.hpp"
#include "stargazer/platform/quota.hpp"
#include "stargazer/platform/redis/redis_platform_api_bodies.hpp"
#include "stargazer/redis/subscriber.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>
#include <rapidjson/document.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <set>
#include <unordered_map>

namespace stargazer::platform {

namespace asio = boost::asio;
using http::method;
using http::request;
using http::response;
using clock_type = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------
// Reply hub

struct reply_hub::impl {
  struct waiter {
    explicit waiter(asio::any_io_executor ex) : signal(ex, clock_type::time_point::max()) {}
    std::vector<std::string> events;  // JSON objects, in arrival order
    bool complete = false;
    asio::steady_timer signal;
  };

  explicit impl(redis::subscriber& s) : sub(s) {}

  redis::subscriber& sub;
  std::unordered_map<std::string, std::shared_ptr<waiter>> waiters;  // by response nonce
  std::unordered_map<std::string, std::set<std::shared_ptr<asio::steady_timer>>> listeners;  // by instance

  // Collects the replies of one turn; call before injecting, so no reply can be missed.
  std::shared_ptr<waiter> expect(const std::string& nonce, asio::any_io_executor ex) {
    auto w = std::make_shared<waiter>(std::move(ex));
    waiters.emplace(nonce, w);
    return w;
  }
  void forget(const std::string& nonce) { waiters.erase(nonce); }
  // Until the turn completes or `until` passes.
  static asio::awaitable<void> wait(waiter& w, clock_type::time_point until) {
    while (!w.complete && clock_type::now() < until) {
      w.signal.expires_at(until);
      boost::system::error_code ec;
      co_await w.signal.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }
  // `wake` is cancelled whenever the instance publishes an event.
  void watch(const std::string& instance, std::shared_ptr<asio::steady_timer> wake) {
    listeners[instance].insert(std::move(wake));
  }
  void unwatch(const std::string& instance, const std::shared_ptr<asio::steady_timer>& wake) {
    auto it = listeners.find(instance);
    if (it == listeners.end()) return;
    it->second.erase(wake);
    if (it->second.empty()) listeners.erase(it);
  }

  void on_message(redis::pubsub_message&& m) {
    const std::string_view prefix = "stargazer:redis_platform:response:";
    if (!m.channel.starts_with(prefix)) return;
    const std::string instance = m.channel.substr(prefix.size());
    if (auto it = listeners.find(instance); it != listeners.end())
      for (const auto& t : it->second) t->cancel();
    rapidjson::Document d;
    d.Parse(m.payload.c_str(), m.payload.size());
    if (d.HasParseError() || !d.IsObject() || !d.HasMember("nonce") || !d["nonce"].IsString()) return;
    const auto it = waiters.find(d["nonce"].GetString());
    if (it == waiters.end()) return;
    auto& w = *it->second;
    if (d.HasMember("type") && d["type"].IsString() && std::string_view(d["type"].GetString()) == "turn_complete")
      w.complete = true;
    else
      w.events.push_back(std::move(m.payload));
    w.signal.cancel();
  }
};

reply_hub::reply_hub(redis::subscriber& sub) : impl_(std::make_shared<impl>(sub)) {
  sub.set_handler([self = impl_.get()](redis::pubsub_message&& m) { self->on_message(std::move(m)); });
}

reply_hub::~reply_hub() { impl_->sub.set_handler(nullptr); }

asio::awaitable<std::error_code> reply_hub::start() {
  const std::vector<std::string> patterns{"stargazer:redis_platform:response:*"};
  co_return co_await impl_->sub.psubscribe(patterns);
}

// ---------------------------------------------------------------------------------------
// Routes

namespace {

const log::logger& api_log() {
  static const log::logger instance("redis-platform-api");
  return instance;
}

response bad(std::string_view code, std::string message) { return response::error(400, code, message); }

std::string instance_json(const instance_info& i) {
  std::string meta = "{";
  for (const auto& [k, v] : i.metadata) {
    if (meta.size() > 1) meta.push_back(',');
    meta += json::quoted(k) + ":" + json::quoted(v);
  }
  meta += "}";
  return fmt::format(R"({{"instance_id":{},"display_name":{},"created_at":{},"metadata":{}}})",
                     json::quoted(i.instance_id), json::quoted(i.display_name), json::quoted(i.created_at), meta);
}

std::string user_json(const user_info& u) {
  std::string meta = "{";
  for (const auto& [k, v] : u.metadata) {
    if (meta.size() > 1) meta.push_back(',');
    meta += json::quoted(k) + ":" + json::quoted(v);
  }
  meta += "}";
  return fmt::format(R"({{"user_id":{},"display_name":{},"registered_at":{},"metadata":{},"admin":{}}})",
                     json::quoted(u.user_id), json::quoted(u.display_name), json::quoted(u.registered_at), meta,
                     u.admin ? "true" : "false");
}

std::string identity_json(const unified_identity& i) {
  return fmt::format(R"({{"unified_id":{},"accounts":{}}})", json::quoted(i.unified_id), json::string_array(i.accounts));
}

template <class T>
std::string json_array(const std::vector<T>& items, std::string (*fn)(const T&)) {
  std::string out = "[";
  for (const auto& i : items) {
    if (out.size() > 1) out.push_back(',');
    out += fn(i);
  }
  return out + "]";
}

std::string message_json(const cached_message& m) {
  return fmt::format(
      R"({{"message_id":{},"user_id":{},"user_name":{},"text":{},"timestamp":{},"unix_time":{:.3f},"is_bot":{},"reply_to_id":{}}})",
      json::quoted(m.message_id), json::quoted(m.user_id), json::quoted(m.user_name), json::quoted(m.text),
      json::quoted(iso_time(m.timestamp)), m.timestamp, m.is_bot ? "true" : "false", json::quoted(m.reply_to_id));
}

// 429 for a message a quota holds back (it is in the history, no worker answers it): the
// error names the limit (the flag that sets it) and says when to try again, in the body
// and in Retry-After.
response over_quota(const quota_decision& d) {
  const auto seconds = retry_after_seconds(d.retry_after);
  const auto limit = to_string(d.limit);
  const auto message =
      d.limit == quota_limit::budget_instance_tokens
          ? std::string("the instance has used its token budget for today (UTC); the message is kept in the history")
          : fmt::format("over the {} limit; the message is kept in the history, try again in {} s", limit, seconds);
  auto out = response::json(429, fmt::format(R"({{"error":{{"code":"rate_limited","message":{},"limit":{},"retry_after":{}}}}})",
                                             json::quoted(message), json::quoted(limit), seconds));
  out.headers.emplace_back("Retry-After", std::to_string(seconds));
  return out;
}

response internal(const std::error_code& ec) {
  api_log().error("redis failure: {}", ec.message());
  return response::error(503, "unavailable", "storage unavailable, retry later");
}

struct api_context : std::enable_shared_from_this<api_context> {
  api_context(redis_platform& p, std::shared_ptr<reply_hub::impl> h, redis_platform_api_settings s)
      : platform(p), hub(std::move(h)), settings(std::move(s)) {}

  redis_platform& platform;
  std::shared_ptr<reply_hub::impl> hub;  // shared: event streams may outlive the hub object at shutdown
  redis_platform_api_settings settings;

  bool is_admin(std::string_view key) const {
    return !settings.admin_key_sha256.empty() && digest_equals(sha256_hex(key), settings.admin_key_sha256);
  }

  // nullopt: allowed. Admin routes take only the admin key; instance routes the admin key
  // or that instance's own key. An unknown instance is 404 only for the admin, so other
  // callers cannot probe which ids exist.
  asio::awaitable<std::optional<response>> authorize(const request& req, const std::string& instance_id) {
    const auto key = req.bearer_token();
    if (key.empty()) co_return response::error(401, "unauthorized", "missing 'Authorization: Bearer <key>'");
    if (key.size() > 256) co_return response::error(401, "unauthorized", "invalid API key");
    if (is_admin(key)) {
      if (instance_id.empty()) co_return std::nullopt;
      auto known = co_await platform.instance_known(instance_id);
      if (!known) co_return internal(known.error());
      if (!*known) co_return response::error(404, "instance_not_found", "no instance '" + instance_id + "'");
      co_return std::nullopt;
    }
    if (instance_id.empty()) {
      if (settings.admin_key_sha256.empty())
        co_return response::error(403, "forbidden", "the admin API is disabled: no admin key is configured");
      co_return response::error(403, "forbidden", "this route needs the admin key");
    }
    const std::string presented(key);
    auto opens = co_await platform.api_key_opens(instance_id, presented);
    if (!opens) co_return internal(opens.error());
    if (*opens) co_return std::nullopt;
    co_return response::error(403, "forbidden", "this key does not open instance '" + instance_id + "'");
  }

  std::optional<response> check_instance_id(const std::string& id) const { return platform::check_instance_id(id); }
};

using handler_fn = asio::awaitable<response> (*)(api_context&, request&);

// ---- instances -------------------------------------------------------------------------

asio::awaitable<response> create_instance(api_context& api, request& req) {
  if (auto denied = co_await api.authorize(req, "")) co_return std::move(*denied);
  auto parsed = parse_create_instance_body(req, api.settings);
  if (auto* err = std::get_if<response>(&parsed)) co_return std::move(*err);
  auto& body = std::get<create_instance_body>(parsed);
  const auto& id = body.instance_id;
  auto r = co_await api.platform.create_instance(id, body.display_name, std::move(body.metadata));
  if (!r && r.error() == make_error_code(errc::invalid_argument))
    co_return response::error(409, "instance_exists", "instance '" + id + "' already exists");
  if (!r) co_return internal(r.error());
  auto out = instance_json(r->info);
  out.pop_back();
  out += ",\"api_key\":" + json::quoted(r->api_key) + "}";
  co_return response::json(201, std::move(out));
}

asio::awaitable<response> list_instances(api_context& api, request& req) {
  if (auto denied = co_await api.authorize(req, "")) co_return std::move(*denied);
  auto r = co_await api.platform.list_instances();
  if (!r) co_return internal(r.error());
  co_return response::json(200, "{\"instances\":" + json_array(*r, &instance_json) + "}");
}

asio::awaitable<response> get_instance(api_context& api, request& req) {
  const std::string id(req.path_param("instance_id"));
  if (auto e = api.check_instance_id(id)) co_return std::move(*e);
  if (auto denied = co_await api.authorize(req, id)) co_return std::move(*denied);
  auto r = co_await api.platform.get_instance(id);
  if (!r) co_return internal(r.error());
  if (!*r) co_return response::error(404, "instance_not_found", "no instance '" + id + "'");
  co_return response::json(200, instance_json(**r));
}

asio::awaitable<response> update_instance(api_context& api, request& req) {
  const std::string id(req.path_param("instance_id"));
  if (auto e = api.check_instance_id(id)) co_return std::move(*e);
  if (auto denied = co_await api.authorize(req, id)) co_return std::move(*denied);
  auto parsed = parse_update_instance_body(req, api.settings);
  if (auto* err = std::get_if<response>(&parsed)) co_return std::move(*err);
  const auto& body = std::get<update_instance_body>(parsed);
  // Named, not a conditional temporary: GCC 12 double-frees those when passed into a coroutine.
  std::optional<std::string> new_name;
  if (!body.display_name.empty()) new_name = body.display_name;
  auto r = co_await api.platform.update_instance(id, new_name, body.metadata);
  if (!r) co_return internal(r.error());
  if (!*r) co_return response::error(404, "instance_not_found", "no instance '" + id + "'");
  co_return co_await get_instance(api, req);
}

asio::awaitable<response> delete_instance(api_context& api, request& req) {
  const std::string id(req.path_param("instance_id"));
  if (auto e = api.check_instance_id(id)) co_return std::move(*e);
  if (auto denied = co_await api.authorize(req, id)) co_return std::move(*denied);
  auto r = co_await api.platform.delete_instance(id);
  if (!r) co_return internal(r.error());
  co_return response::json(200, R"({"deleted":true,"instance_id":)" + json::quoted(id) + "}");
}

// ---- users -----------------------------------------------------------------------------

asio::awaitable<response> register_user(api_context& api, request& req) {
  const std::string id(req.path_param("instance_id"));
  if (auto e = api.check_instance_id(id)) co_return std::move(*e);
  if (auto denied = co_await api.authorize(req, id)) co_return std::move(*denied);
  auto parsed = parse_register_user_body(req, api.settings);
  if (auto* err = std::get_if<response>(&parsed)) co_return std::move(*err);
  const auto& body = std::get<register_user_body>(parsed);
  auto r = co_await api.platform.register_user(id, body.user_id, body.display_name, body.metadata, body.admin);
  if (!r) co_return internal(r.error());
  co_return response::json(201, user_json(*r));
}

asio::awaitable<response> list_users(api_context& api, request& req) {
  const std::string id(req.path_param("instance_id"));
  if (auto e = api.check_instance_id(id)) co_return std::move(*e);
  if (auto denied = co_await api.authorize(req, id)) co_return std::move(*denied);
  auto r = co_await api.platform.list_users(id);
  if (!r) co_return internal(r.error());
  co_return response::json(200, "{\"users\":" + json_array(*r, &user_json) + "}");
}

asio::awaitable<response> get_user(api_context& api, request& req) {
  const std::string id(req.path_param("instance_id")), user_id(req.path_param("user_id"));
  if (auto e = api.check_instance_id(id)) co_return std::move(*e);
  if (auto e = check_user_id(user_id)) co_return std::move(*e);
  if (auto denied = co_await api.authorize(req, id)) co_return std::move(*denied);
  auto r = co_await api.platform.get_user(id, user_id);
  if (!r) co_return internal(r.error());
  if (!*r) co_return response::error(404, "user_not_found", "no user '" + user_id + "'");
  co_return response::json(200, user_json(**r));
}

asio::awaitable<response> delete_user(api_context& api, request& req) {
  const std::string id(req.path_param("instance_id")), user_id(req.path_param("user_id"));
  if (auto e = api.check_instance_id(id)) co_return std::move(*e);
  if (auto e = check_user_id(user_id)) co_return std::move(*e);
  if (auto denied = co_await api.authorize(req, id)) co_return std::move(*denied);
  auto r = co_await api.platform.delete_user(id, user_id);
  if (!r) co_return internal(r.error());
  if (!*r) co_return response::error(404, "user_not_found", "no user '" + user_id + "'");
  co_return response::json(200, R"({"deleted":true,"user_id":)" + json::quoted(user_id) + "}");
}

// ---- messages --------------------------------------------------------------------------

asio::awaitable<response> inject(api_context& api, request& req) {
  const std::string id(req.path_param("instance_id"));
  if (auto e = api.check_instance_id(id)) co_return std::move(*e);
  if (auto denied = co_await api.authorize(req, id)) co_return std::move(*denied);
  auto parsed = parse_inject_body(req, api.settings);
  if (auto* err = std::get_if<response>(&parsed)) co_return std::move(*err);
  auto& in = std::get<inject_request>(parsed);

  const auto wait_param = req.query_param("wait");
  const bool wait = wait_param && (*wait_param == "true" || *wait_param == "1");
  auto timeout = api.settings.default_wait;
  if (const auto t = req.query_param("timeout")) {
    double seconds = -1;
    const auto [ptr, ec] = std::from_chars(t->data(), t->data() + t->size(), seconds);
    // Written so that NaN fails too (casting it to an integer is undefined).
    if (ec != std::errc{} || ptr != t->data() + t->size() ||
        !(seconds >= 0 && seconds <= static_cast<double>(api.settings.max_wait.count())))
      co_return bad("bad_timeout", fmt::format("'timeout' is seconds between 0 and {}", api.settings.max_wait.count()));
    timeout = std::chrono::seconds(static_cast<long>(seconds));
  }

  // Idempotency-Key: the first result is stored; a retry gets it back and injects nothing.
  // "pending" marks a request still running; it expires after the longest such a request
  // can run, so a gateway that dies mid-request does not block the key for a day. The
  // message itself is injected at most once per key whatever happens (`once_key`).
  std::string idem_key;
  if (const auto k = req.header("idempotency-key")) {
    if (k->empty() || k->size() > 128) co_return bad("bad_idempotency_key", "Idempotency-Key is 1-128 characters");
    idem_key = redis_platform::idempotency_key(id, *k);
    const auto pending_ttl = (wait ? timeout : std::chrono::seconds(0)) + api.settings.idempotency_pending_margin;
    auto claim = co_await api.platform.claim_idempotency_key(idem_key, pending_ttl);
    if (!claim) co_return internal(claim.error());
    if (claim->what == idempotency_claim::state::in_progress)
      co_return response::error(409, "request_in_progress", "a request with this Idempotency-Key is still running");
    if (claim->what == idempotency_claim::state::replay) {
      auto replay = response::json(claim->status, std::move(claim->body));
      replay.headers.emplace_back("Idempotent-Replayed", "true");
      co_return replay;
    }
  }

  in.response_nonce = redis_platform::new_response_nonce();
  if (!idem_key.empty()) {
    in.once_key = idem_key + ":injected";
    in.once_ttl = api.settings.idempotency_ttl;
  }
  std::shared_ptr<reply_hub::impl::waiter> waiter;
  if (wait) {
    waiter = api.hub->expect(in.response_nonce, co_await asio::this_coro::executor);
  }
  const auto nonce = in.response_nonce;
  auto r = co_await api.platform.inject_message(id, std::move(in));
  response out;
  if (!r) {
    out = internal(r.error());
  } else if (r->refusal == inject_refusal::unknown_instance) {
    out = response::error(404, "instance_not_found", "no instance '" + id + "'");
  } else if (r->refusal == inject_refusal::user_not_registered) {
    out = response::error(403, "user_not_registered", "this instance has a closed roster; register the user first");
  } else if (r->refusal == inject_refusal::user_name_required) {
    out = bad("missing_field", "'user_name' is required on an instance without registered users");
  } else if (r->refusal == inject_refusal::message_id_reused) {
    out = response::error(409, "message_id_reused",
                          "'message_id' '" + r->message_id + "' was already used in instance '" + id + "'");
  } else if (r->refusal == inject_refusal::over_quota) {
    out = over_quota(r->quota);
  } else if (r->injected_before) {
    // An earlier request with this key injected it and died before storing its answer:
    // its replies went to that request (and to the history and event stream).
    out = response::json(202, fmt::format(R"({{"message_id":{},"complete":false,"responses":[]}})",
                                          json::quoted(r->message_id)));
    out.headers.emplace_back("Idempotent-Replayed", "true");
  } else {
    if (waiter) co_await reply_hub::impl::wait(*waiter, clock_type::now() + timeout);
    std::string responses = "[";
    if (waiter)
      for (const auto& e : waiter->events) {
        if (responses.size() > 1) responses.push_back(',');
        responses += e;
      }
    responses += "]";
    const bool complete = waiter && waiter->complete;
    // Past the timeout (or without wait) the message is accepted, not failed: 202.
    out = response::json(complete ? 200 : 202,
                         fmt::format(R"({{"message_id":{},"complete":{},"responses":{}}})", json::quoted(r->message_id),
                                     complete ? "true" : "false", responses));
  }
  if (waiter) api.hub->forget(nonce);
  if (!idem_key.empty())
    co_await api.platform.finish_idempotency_key(idem_key, out.status, out.body, api.settings.idempotency_ttl);
  co_return out;
}

asio::awaitable<response> history(api_context& api, request& req) {
  const std::string id(req.path_param("instance_id"));
  if (auto e = api.check_instance_id(id)) co_return std::move(*e);
  if (auto denied = co_await api.authorize(req, id)) co_return std::move(*denied);
  std::size_t limit = 50;
  if (const auto l = req.query_param("limit")) {
    const auto [ptr, ec] = std::from_chars(l->data(), l->data() + l->size(), limit);
    if (ec != std::errc{} || ptr != l->data() + l->size() || limit == 0 || limit > 200)
      co_return bad("bad_limit", "'limit' is an integer between 1 and 200");
  }
  std::optional<double> before;
  if (const auto b = req.query_param("before")) {
    double v = 0;
    const auto [ptr, ec] = std::from_chars(b->data(), b->data() + b->size(), v);
    if (ec != std::errc{} || ptr != b->data() + b->size() || !std::isfinite(v))
      co_return bad("bad_before", "'before' is a unix time in seconds (the unix_time of the oldest message seen)");
    before = v;
  }
  auto r = co_await api.platform.history(id, limit, before);
  if (!r) co_return internal(r.error());
  co_return response::json(200, "{\"messages\":" + json_array(*r, &message_json) + "}");
}

// The instance's usage per UTC day (docs/rest-api.md, "Usage"): from and to are dates,
// YYYY-MM-DD, inclusive; by default the 30 days up to today.
asio::awaitable<response> usage(api_context& api, request& req) {
  const std::string id(req.path_param("instance_id"));
  if (auto e = api.check_instance_id(id)) co_return std::move(*e);
  if (auto denied = co_await api.authorize(req, id)) co_return std::move(*denied);
  auto to = utc_day_of(std::chrono::system_clock::now());
  if (const auto t = req.query_param("to")) {
    const auto day = parse_day(*t);
    if (!day) co_return bad("bad_to", "'to' is a date, YYYY-MM-DD");
    to = *day;
  }
  auto from = to - std::chrono::days(29);
  if (const auto f = req.query_param("from")) {
    const auto day = parse_day(*f);
    if (!day) co_return bad("bad_from", "'from' is a date, YYYY-MM-DD");
    from = *day;
  }
  if (from > to) co_return bad("bad_from", "'from' is after 'to'");
  if ((to - from).count() >= max_usage_days)
    co_return bad("bad_range", fmt::format("at most {} days from 'from' to 'to'", max_usage_days));
  auto days = co_await read_usage(api.platform.connection(), "redis", id, from, to);
  if (!days) co_return internal(days.error());
  std::int64_t prompt = 0, completion = 0, turns = 0;
  std::string list = "[";
  for (const auto& d : *days) {
    if (list.size() > 1) list.push_back(',');
    list += fmt::format(R"({{"date":"{}","prompt_tokens":{},"completion_tokens":{},"total_tokens":{},"turns":{}}})",
                        d.day, d.prompt_tokens, d.completion_tokens, d.prompt_tokens + d.completion_tokens, d.turns);
    prompt += d.prompt_tokens;
    completion += d.completion_tokens;
    turns += d.turns;
  }
  list += "]";
  co_return response::json(
      200, fmt::format(R"({{"instance_id":{},"from":"{}","to":"{}","days":{},"total":{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{},"turns":{}}}}})",
                       json::quoted(id), format_day(from), format_day(to), list, prompt, completion, prompt + completion,
                       turns));
}

// <ms>-<seq>, both unsigned 64-bit decimals as Redis requires (a larger number would make
// every XRANGE fail, ending the stream at once and the client reconnecting forever).
bool valid_stream_id(std::string_view s) {
  const auto dash = s.find('-');
  if (dash == std::string_view::npos) return false;
  const auto u64 = [](std::string_view part) {
    if (part.empty() || part.find_first_not_of("0123456789") != std::string_view::npos) return false;
    std::uint64_t v = 0;
    const auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    return ec == std::errc{} && ptr == part.data() + part.size();
  };
  return u64(s.substr(0, dash)) && u64(s.substr(dash + 1));
}

asio::awaitable<response> events(api_context& api, request& req) {
  const std::string id(req.path_param("instance_id"));
  if (auto e = api.check_instance_id(id)) co_return std::move(*e);
  if (auto denied = co_await api.authorize(req, id)) co_return std::move(*denied);
  std::string last_id;
  if (const auto h = req.header("last-event-id")) last_id = std::string(*h);
  else if (const auto q = req.query_param("last_event_id")) last_id = *q;
  if (!last_id.empty() && !valid_stream_id(last_id))
    co_return bad("bad_last_event_id", "Last-Event-ID must be an event id such as 1700000000000-0");
  if (last_id.empty()) {
    // Without a resume point the stream starts now.
    auto newest = co_await api.platform.newest_event_id(id);
    if (!newest) co_return internal(newest.error());
    last_id = std::move(*newest);
  }

  struct stream_state {
    std::shared_ptr<api_context> api;
    std::string instance;
    std::string last_id;
    std::shared_ptr<asio::steady_timer> wake;
    bool started = false;
    ~stream_state() { api->hub->unwatch(instance, wake); }
  };
  auto state = std::make_shared<stream_state>();
  state->api = api.shared_from_this();
  state->instance = id;
  state->last_id = last_id;
  state->wake = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor);
  api.hub->watch(id, state->wake);

  response res;
  res.status = 200;
  res.content_type = "text/event-stream";
  res.headers.emplace_back("X-Accel-Buffering", "no");
  res.stream = [state](std::string& out) -> asio::awaitable<bool> {
    auto& api = *state->api;
    if (!state->started) {
      state->started = true;
      out = "retry: 2000\n\n";
      co_return true;
    }
    for (;;) {
      // Arm the wake-up before reading, so an event published in between is not missed.
      state->wake->expires_after(api.settings.sse_heartbeat);
      auto r = co_await api.platform.events_after(state->instance, state->last_id, 100);
      if (!r) co_return false;
      for (const auto& e : *r) {
        if (!e.id.empty()) {
          state->last_id = e.id;
          out += "id: " + e.id + "\n";
        }
        const std::string& data = e.data;
        rapidjson::Document d;
        d.Parse(data.c_str(), data.size());
        const std::string type = !d.HasParseError() && d.IsObject() && d.HasMember("type") && d["type"].IsString()
                                     ? d["type"].GetString()
                                     : "message";
        out += "event: " + type + "\ndata: " + data + "\n\n";
      }
      if (!out.empty()) co_return true;
      boost::system::error_code ec;
      co_await state->wake->async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (!ec) {  // the heartbeat interval passed without events
        out = ": keep-alive\n\n";
        co_return true;
      }
    }
  };
  co_return res;
}

// ---- identities (admin key only) -------------------------------------------------------

asio::awaitable<response> link_identity_route(api_context& api, request& req) {
  if (auto denied = co_await api.authorize(req, "")) co_return std::move(*denied);
  const identity_limits limits;
  auto parsed = parse_link_identity_body(req, limits);
  if (auto* err = std::get_if<response>(&parsed)) co_return std::move(*err);
  auto& body = std::get<link_identity_body>(parsed);
  link_request link{std::move(body.accounts), std::move(body.unified_id), body.merge};
  auto r = co_await link_identity(api.platform.connection(), std::move(link), limits);
  if (!r) co_return internal(r.error());
  if (r->what == link_outcome::status::conflict) {
    std::string owners;
    for (const auto& [account_text, owner] : r->conflicts)
      owners += fmt::format("{}{} belongs to {}", owners.empty() ? "" : ", ", account_text, owner);
    co_return response::error(409, "identity_conflict",
                              owners + "; link with \"merge\": true (stargazer identity link --merge) to merge them");
  }
  if (r->what == link_outcome::status::too_many_accounts)
    co_return response::error(409, "identity_full",
                              fmt::format("the person would hold {} accounts, more than {}", r->accounts_after,
                                          limits.max_accounts_per_person));
  auto out = identity_json(r->identity);
  out.pop_back();
  out += fmt::format(R"(,"created":{},"merged_ids":{}}})", r->created ? "true" : "false", json::string_array(r->merged_ids));
  co_return response::json(r->created ? 201 : 200, std::move(out));
}

asio::awaitable<response> show_identity(api_context& api, request& req) {
  std::string unified_id(req.path_param("unified_id"));
  if (auto e = check_unified_id(unified_id)) co_return std::move(*e);
  if (auto denied = co_await api.authorize(req, "")) co_return std::move(*denied);
  auto r = co_await identity_by_id(api.platform.connection(), unified_id);
  if (!r) co_return internal(r.error());
  if (!*r) co_return response::error(404, "identity_not_found", "no unified id '" + unified_id + "'");
  co_return response::json(200, identity_json(**r));
}

asio::awaitable<response> show_account_identity(api_context& api, request& req) {
  auto who = path_account(req.path_param("account"));
  if (auto* err = std::get_if<response>(&who)) co_return std::move(*err);
  if (auto denied = co_await api.authorize(req, "")) co_return std::move(*denied);
  const auto& a = std::get<account>(who);
  auto r = co_await resolve_identity(api.platform.connection(), a.platform, a.user_id);
  if (!r) co_return internal(r.error());
  if (!*r) co_return response::error(404, "identity_not_found", "account '" + a.text() + "' is linked to no unified id");
  co_return response::json(200, identity_json(**r));
}

asio::awaitable<response> unlink_account(api_context& api, request& req) {
  auto who = path_account(req.path_param("account"));
  if (auto* err = std::get_if<response>(&who)) co_return std::move(*err);
  if (auto denied = co_await api.authorize(req, "")) co_return std::move(*denied);
  const auto a = std::get<account>(who);
  auto r = co_await unlink_identity(api.platform.connection(), a);
  if (!r) co_return internal(r.error());
  if (!*r) co_return response::error(404, "identity_not_found", "account '" + a.text() + "' is linked to no unified id");
  co_return response::json(200, fmt::format(R"({{"unlinked":true,"account":{},"unified_id":{}}})",
                                            json::quoted(a.text()), json::quoted(**r)));
}

// ---- files -----------------------------------------------------------------------------

asio::awaitable<response> download(api_context& api, request& req) {
  const std::string file_id(req.path_param("file_id")), filename(req.path_param("filename"));
  const bool hex32 = file_id.size() == 32 && file_id.find_first_not_of("0123456789abcdef") == std::string::npos;
  if (!hex32) co_return response::error(404, "file_not_found", "no such file");
  auto r = co_await api.platform.get_file(file_id);
  if (!r) co_return internal(r.error());
  if (!*r || (*r)->filename != filename) co_return response::error(404, "file_not_found", "no such file (files expire after 24 h)");
  auto& f = **r;
  const bool safe_type = f.mimetype.find_first_of("\r\n") == std::string::npos && !f.mimetype.empty();
  auto res = response::text(200, std::move(f.data), safe_type ? f.mimetype : "application/octet-stream");
  res.headers.emplace_back("X-Content-Type-Options", "nosniff");
  res.headers.emplace_back("Content-Disposition", "attachment");
  co_return res;
}

}  // namespace

void add_redis_platform_routes(http::router& routes, redis_platform& platform, reply_hub& hub,
                               redis_platform_api_settings settings) {
  auto api = std::make_shared<api_context>(platform, hub.impl_, std::move(settings));
  const auto add = [&](method m, const char* pattern, handler_fn fn) {
    routes.add(m, pattern, http::handler([api, fn](request& req) { return fn(*api, req); }));
  };
  add(method::post, "/redis-platform/instances", &create_instance);
  add(method::get, "/redis-platform/instances", &list_instances);
  add(method::get, "/redis-platform/instances/{instance_id}", &get_instance);
  add(method::patch, "/redis-platform/instances/{instance_id}", &update_instance);
  add(method::delete_, "/redis-platform/instances/{instance_id}", &delete_instance);
  add(method::post, "/redis-platform/instances/{instance_id}/users", &register_user);
  add(method::get, "/redis-platform/instances/{instance_id}/users", &list_users);
  add(method::get, "/redis-platform/instances/{instance_id}/users/{user_id}", &get_user);
  add(method::delete_, "/redis-platform/instances/{instance_id}/users/{user_id}", &delete_user);
  add(method::post, "/redis-platform/instances/{instance_id}/messages", &inject);
  add(method::get, "/redis-platform/instances/{instance_id}/messages", &history);
  add(method::get, "/redis-platform/instances/{instance_id}/events", &events);
  add(method::get, "/redis-platform/instances/{instance_id}/usage", &usage);
  add(method::get, "/redis-platform/files/{file_id}/{filename}", &download);
  add(method::post, "/redis-platform/identities", &link_identity_route);
  add(method::get, "/redis-platform/identities/{unified_id}", &show_identity);
  add(method::get, "/redis-platform/identities/accounts/{account}", &show_account_identity);
  add(method::delete_, "/redis-platform/identities/accounts/{account}", &unlink_account);
}

}  // namespace stargazer::platform
