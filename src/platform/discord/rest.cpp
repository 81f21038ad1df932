#include "stargazer/platform/discord/rest.hpp"

#include "stargazer/core/error.hpp"
#include "stargazer/core/json_value.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/http/client.hpp"
#include "stargazer/redis/connection.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <charconv>

namespace stargazer::platform::discord {

namespace asio = boost::asio;
using std::chrono::milliseconds;

namespace {

// The clock is Redis's (TIME), so every process agrees on windows. Returns the wait in ms
// (0: the request may go, and is counted).
const redis::script acquire_script(R"lua(
local prefix, major, global_limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local blocked = redis.call('PTTL', prefix .. ':global:block')
if blocked > 0 then return blocked end
-- The global limit as a sliding window: at most global_limit requests in any window_ms,
-- so no alignment of Discord's own window sees more (a fixed window per second would let
-- two seconds' worth through across a boundary). The margin covers requests sent apart
-- that arrive closer together.
local window_ms = 1050
local gkey = prefix .. ':global:sent'
redis.call('ZREMRANGEBYSCORE', gkey, '-inf', now - window_ms)
if redis.call('ZCARD', gkey) >= global_limit then
  local oldest = redis.call('ZRANGE', gkey, 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window_ms - now)
end
local bucket = redis.call('GET', KEYS[1])
if bucket then
  local bkey = prefix .. ':bucket:' .. bucket .. ':' .. major
  local s = redis.call('HMGET', bkey, 'remaining', 'reset_at', 'limit', 'window')
  local remaining, reset_at, limit, window = tonumber(s[1]), tonumber(s[2]), tonumber(s[3]), tonumber(s[4])
  if reset_at and reset_at <= now and limit and window then
    -- The window passed: a fresh one starts with this request (the response corrects it).
    remaining, reset_at = limit, now + window
    redis.call('HSET', bkey, 'remaining', remaining, 'reset_at', reset_at)
    redis.call('PEXPIRE', bkey, window + 60000)
  end
  if reset_at and reset_at > now then
    if remaining <= 0 then return reset_at - now end
    redis.call('HINCRBY', bkey, 'remaining', -1)
  end
end
redis.call('ZADD', gkey, now, now .. ':' .. redis.call('INCR', prefix .. ':global:seq'))
redis.call('PEXPIRE', gkey, 2000)
return 0
)lua");

// What a response's headers say about its bucket. Within the same window the lower
// remaining count wins: requests counted since this one was sent are not in it yet.
const redis::script learn_script(R"lua(
local prefix, major, bucket = ARGV[1], ARGV[2], ARGV[3]
local limit, remaining, after = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], bucket, 'EX', 86400)
local bkey = prefix .. ':bucket:' .. bucket .. ':' .. major
local s = redis.call('HMGET', bkey, 'remaining', 'reset_at', 'window')
local cur_remaining, cur_reset, window = tonumber(s[1]), tonumber(s[2]), tonumber(s[3])
local reset_at = now + after
if cur_reset and cur_reset > now and math.abs(cur_reset - reset_at) < 1000 and cur_remaining and cur_remaining < remaining then
  remaining = cur_remaining
end
-- The window's length shows best on its first request.
if remaining >= limit - 1 or not window then window = after end
redis.call('HSET', bkey, 'remaining', remaining, 'reset_at', reset_at, 'limit', limit, 'window', window)
redis.call('PEXPIRE', bkey, after + 60000)
return 1
)lua");

// A 429: the whole bot waits (global) or the bucket does.
const redis::script refused_script(R"lua(
local prefix, major, bucket, wait, global = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
if global == '1' then
  redis.call('SET', prefix .. ':global:block', '1', 'PX', math.max(1, wait))
  return 1
end
if bucket ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local bkey = prefix .. ':bucket:' .. bucket .. ':' .. major
  redis.call('HSET', bkey, 'remaining', 0, 'reset_at', now + wait)
  redis.call('PEXPIRE', bkey, wait + 60000)
end
return 1
)lua");

std::optional<double> number_header(const http::response& r, std::string_view name) {
  const auto v = r.header(name);
  if (!v) return std::nullopt;
  double out = 0;
  const auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
  if (ec != std::errc{} || ptr != v->data() + v->size()) return std::nullopt;
  return out;
}

}  // namespace

struct rest_client::impl : std::enable_shared_from_this<impl> {
  impl(asio::any_io_executor e, redis::connection& r, rest_settings s, metrics::registry* m)
      : ex(e), redis(r), settings(std::move(s)), log("discord:rest") {
    std::string error;
    auto origin = http::parse_base_url(settings.api_url, &error);
    if (!origin) throw std::invalid_argument("--discord-api-url: " + error);
    http::client_settings cs;
    cs.response_timeout = settings.timeout;
    cs.connect_timeout = settings.timeout;
    // Discord asks for "DiscordBot ($url, $version)"; others may be refused.
    cs.user_agent = "DiscordBot (https://github.com/stargazer-bot/stargazer, " STARGAZER_VERSION ")";
    client = std::make_unique<http::client>(e, *origin, cs);
    if (m != nullptr) {
      invalid_counter = &m->make_counter("stargazer_discord_invalid_requests_total",
                                         "Discord API requests answered 401, 403 or 429");
      limited_counter = &m->make_counter("stargazer_discord_rate_limited_total", "Discord API requests answered 429");
      waits = &m->make_histogram("stargazer_discord_rate_limit_wait_seconds",
                                 "Time requests waited for their rate-limit bucket", metrics::latency_buckets());
    }
  }

  asio::any_io_executor ex;
  redis::connection& redis;
  rest_settings settings;
  log::logger log;
  std::unique_ptr<http::client> client;
  metrics::counter* invalid_counter = nullptr;
  metrics::counter* limited_counter = nullptr;
  metrics::histogram* waits = nullptr;
  std::uint64_t invalid = 0;

  std::string route_key(const std::string& route) const { return settings.key_prefix + ":route:" + route; }

  // Waits until the shared state lets the request go; false when that takes too long or
  // Redis cannot say (then the request is not sent: sending blind risks invalid requests).
  asio::awaitable<bool> acquire(const rest_request& req) {
    const auto started = std::chrono::steady_clock::now();
    asio::steady_timer timer(ex);
    for (;;) {
      const std::vector<std::string> keys{route_key(req.route)};
      const std::vector<std::string> args{settings.key_prefix, req.major, std::to_string(settings.global_per_second)};
      auto r = co_await redis.eval(acquire_script, keys, args);
      if (!r || r->is_error()) {
        log.warn("rate-limit state unavailable: {}", r ? r->str() : r.error().message());
        co_return false;
      }
      const auto wait = milliseconds(r->to_integer().value_or(0));
      if (wait.count() <= 0) {
        if (waits != nullptr)
          waits->observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
        co_return true;
      }
      if (std::chrono::steady_clock::now() + wait - started > settings.max_wait) co_return false;
      timer.expires_after(wait + milliseconds(5));
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  asio::awaitable<void> learn(const rest_request& req, const http::response& res) {
    const auto bucket = res.header("x-ratelimit-bucket");
    const auto limit = number_header(res, "x-ratelimit-limit");
    const auto remaining = number_header(res, "x-ratelimit-remaining");
    const auto after = number_header(res, "x-ratelimit-reset-after");
    if (!bucket || !limit || !remaining || !after) co_return;
    const std::vector<std::string> keys{route_key(req.route)};
    const std::vector<std::string> args{settings.key_prefix,
                                        req.major,
                                        std::string(*bucket),
                                        std::to_string(static_cast<long>(*limit)),
                                        std::to_string(static_cast<long>(*remaining)),
                                        std::to_string(static_cast<long>(*after * 1000.0 + 0.5))};
    co_await redis.eval(learn_script, keys, args);
  }

  // A 429: how long to wait, told to every process.
  asio::awaitable<milliseconds> refused(const rest_request& req, const http::response& res) {
    double retry_after = number_header(res, "retry-after").value_or(1.0);
    bool global = res.header("x-ratelimit-global").has_value();
    auto parsed = json::parse_object(res.body);
    if (auto* doc = std::get_if<rapidjson::Document>(&parsed)) {
      if (doc->HasMember("retry_after") && (*doc)["retry_after"].IsNumber()) retry_after = (*doc)["retry_after"].GetDouble();
      if (doc->HasMember("global") && (*doc)["global"].IsBool()) global = global || (*doc)["global"].GetBool();
    }
    const auto scope = res.header("x-ratelimit-scope");
    const auto wait = milliseconds(static_cast<long>(std::clamp(retry_after, 0.0, 3600.0) * 1000.0) + 1);
    log.warn("429 on {} ({} scope): waiting {} ms", req.route, scope ? std::string(*scope) : global ? "global" : "?",
             wait.count());
    const auto bucket = res.header("x-ratelimit-bucket");
    const std::vector<std::string> keys{route_key(req.route)};
    const std::vector<std::string> args{settings.key_prefix, req.major, bucket ? std::string(*bucket) : std::string(),
                                        std::to_string(wait.count()), global ? "1" : "0"};
    co_await redis.eval(refused_script, keys, args);
    co_return wait;
  }

  asio::awaitable<result<http::response>> send(rest_request req) {
    auto self = shared_from_this();
    asio::steady_timer timer(ex);
    for (int attempt = 1;; ++attempt) {
      if (!co_await acquire(req)) co_return make_error_code(errc::timeout);
      http::request out;
      out.verb = req.verb;
      out.target = req.path;
      out.headers = req.headers;
      out.headers.emplace_back("Authorization", "Bot " + settings.token);
      if (!req.body.empty() || req.verb == http::method::post || req.verb == http::method::put ||
          req.verb == http::method::patch)
        out.headers.emplace_back("Content-Type", req.content_type);
      out.body = req.body;
      auto r = co_await client->send(std::move(out));
      if (!r) {
        if (attempt >= settings.max_attempts) co_return r.error();
        log.debug("{} failed ({}), attempt {}", req.route, r.error().message(), attempt);
        continue;
      }
      const auto status = r->status;
      if (status == 401 || status == 403 || status == 429) {
        ++invalid;
        if (invalid_counter != nullptr) invalid_counter->inc();
      }
      co_await learn(req, *r);
      if (status == 429) {
        if (limited_counter != nullptr) limited_counter->inc();
        const auto wait = co_await refused(req, *r);
        if (attempt >= settings.max_attempts) co_return std::move(*r);
        timer.expires_after(wait);
        boost::system::error_code ec;
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      if (status >= 500 && attempt < settings.max_attempts) {
        timer.expires_after(milliseconds(250 * attempt * attempt));
        boost::system::error_code ec;
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      co_return std::move(*r);
    }
  }
};

rest_client::rest_client(asio::any_io_executor ex, redis::connection& redis, rest_settings settings,
                         metrics::registry* metrics)
    : impl_(std::make_shared<impl>(ex, redis, std::move(settings), metrics)) {}

rest_client::~rest_client() = default;

asio::awaitable<result<http::response>> rest_client::send(rest_request req) {
  auto keep = impl_;
  co_return co_await keep->send(std::move(req));
}

std::uint64_t rest_client::invalid_requests() const { return impl_->invalid; }

}  // namespace stargazer::platform::discord
