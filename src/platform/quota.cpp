#include "stargazer/platform/quota.hpp"

#include "stargazer/core/error.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/redis/connection.hpp"
#include "stargazer/redis/expiry_memo.hpp"
#include "stargazer/redis/scan.hpp"

#include <algorithm>
#include <map>
#include <utility>

namespace stargazer::platform {

namespace asio = boost::asio;
using namespace std::chrono;

namespace {

// One token bucket per rate (capacity N, refilled at N per period, so a bucket idle for a
// period is full and its key may expire then), and the day's token budget read from the
// usage counters the workers write. A turn takes a token from every bucket that is on, or
// from none: a refusal by the channel's rate must not cost the user a token.
//
// KEYS[1] the user's bucket     KEYS[4] the user's notice mark
// KEYS[2] the channel's bucket  KEYS[5] the channel's notice mark
// KEYS[3] today's usage hash    KEYS[6] the budget's notice mark
// ARGV[1], ARGV[2]: the user's rate, turns and period in ms (0 turns: off)
// ARGV[3], ARGV[4]: the channel's rate
// ARGV[5]: the day's token budget (0: off); ARGV[6]: ms until the day ends
// ARGV[7]: '1' to mark a refused subject as told for the limit's window
// Returns {0, 0, 0} when admitted, else {limit (1 user, 2 channel, 3 budget),
// ms until it would admit, 1 when this call set the notice mark}.
const redis::script& admit_script() {
  static const redis::script s(R"lua(
if redis.replicate_commands then redis.replicate_commands() end  -- TIME in a script before Redis 5
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function told(key, window)
  if ARGV[7] ~= '1' then return 0 end
  if redis.call('SET', key, '1', 'NX', 'PX', window) then return 1 end
  return 0
end
local budget = tonumber(ARGV[5])
if budget > 0 then
  local used = redis.call('HMGET', KEYS[3], 'prompt_tokens', 'completion_tokens')
  if (tonumber(used[1]) or 0) + (tonumber(used[2]) or 0) >= budget then
    local window = tonumber(ARGV[6])
    return {3, window, told(KEYS[6], window)}
  end
end
local taken = {}
for i = 1, 2 do
  local capacity = tonumber(ARGV[2 * i - 1])
  if capacity > 0 then
    local period = tonumber(ARGV[2 * i])
    local state = redis.call('HMGET', KEYS[i], 'tokens', 'at')
    local tokens, at = tonumber(state[1]), tonumber(state[2])
    if tokens == nil or at == nil then
      tokens = capacity
    else
      tokens = math.min(capacity, tokens + math.max(0, now - at) * capacity / period)
    end
    if tokens < 1 then
      return {i, math.ceil((1 - tokens) * period / capacity), told(KEYS[3 + i], period)}
    end
    taken[#taken + 1] = {KEYS[i], tokens - 1, period}
  end
end
for _, bucket in ipairs(taken) do
  redis.call('HSET', bucket[1], 'tokens', string.format('%.6f', bucket[2]), 'at', string.format('%d', now))
  redis.call('PEXPIRE', bucket[1], bucket[3])
end
return {0, 0, 0}
)lua");
  return s;
}

constexpr std::array<quota_limit, 3> limit_by_index{quota_limit::rate_user, quota_limit::rate_instance,
                                                    quota_limit::budget_instance_tokens};

std::string rate_turns(const rate& r) { return std::to_string(r.enabled() ? r.turns : 0); }
std::string rate_period(const rate& r) { return std::to_string(r.enabled() ? r.period.count() : 0); }

std::int64_t integer_of(const redis::reply& r) { return std::max<long long>(0, r.to_integer().value_or(0)); }

usage_day usage_of(std::string day, const redis::reply& fields) {
  usage_day d;
  d.day = std::move(day);
  if (!fields.is_array() || fields.elements().size() != 3) return d;
  const auto& v = fields.elements();
  d.prompt_tokens = integer_of(v[0]);
  d.completion_tokens = integer_of(v[1]);
  d.turns = integer_of(v[2]);
  return d;
}

bool has_usage(const usage_day& d) { return d.prompt_tokens > 0 || d.completion_tokens > 0 || d.turns > 0; }

void log_usage_ttl_failure(std::error_code ec) {
  static const log::logger usage_log("quota");
  usage_log.warn("a new usage key's TTL not set (set by a later write): {}", ec.message());
}

bool valid_range(sys_days from, sys_days to) { return from <= to && (to - from).count() < max_usage_days; }

}  // namespace

quotas::quotas(redis::connection& conn, metrics::registry* metrics) : conn_(conn) {
  if (metrics == nullptr) return;
  for (std::size_t i = 0; i < limit_by_index.size(); ++i)
    refused_[i] = &metrics->make_counter("stargazer_rate_limited_total",
                                         "Turns and REST messages held back by a quota, by limit",
                                         {{"limit", std::string(to_string(limit_by_index[i]))}});
}

asio::awaitable<result<quota_decision>> quotas::admit(const quota_settings& limits, const quota_subject& who,
                                                      bool notice) {
  if (!limits.enabled()) co_return quota_decision{};
  // No user (a message without a sender id): the user's rate has nobody to count.
  quota_settings applied = limits;
  if (who.user_id.empty()) applied.per_user = rate{};
  const auto now = system_clock::now();
  const auto user = user_subject(who.platform, who.channel_id, who.user_id);
  const auto channel = channel_subject(who.platform, who.channel_id);
  const std::vector<std::string> keys{quota_bucket_key(quota_limit::rate_user, user),
                                      quota_bucket_key(quota_limit::rate_instance, channel),
                                      usage_key(who.platform, who.channel_id, format_day(utc_day_of(now))),
                                      quota_notice_key(quota_limit::rate_user, user),
                                      quota_notice_key(quota_limit::rate_instance, channel),
                                      quota_notice_key(quota_limit::budget_instance_tokens, channel)};
  const std::vector<std::string> args{rate_turns(applied.per_user),
                                      rate_period(applied.per_user),
                                      rate_turns(applied.per_instance),
                                      rate_period(applied.per_instance),
                                      std::to_string(applied.daily_tokens_per_instance),
                                      std::to_string(until_next_utc_day(now).count()),
                                      notice ? "1" : "0"};
  auto r = co_await conn_.eval(admit_script(), keys, args);
  if (!r) co_return r.error();
  if (r->is_error()) co_return make_error_code(errc::redis_error);
  const auto& v = r->elements();
  if (!r->is_array() || v.size() != 3 || !v[0].is_integer() || !v[1].is_integer() || !v[2].is_integer())
    co_return make_error_code(errc::unexpected_reply);
  const auto which = v[0].integer();
  if (which == 0) co_return quota_decision{};
  if (which < 1 || which > 3) co_return make_error_code(errc::unexpected_reply);
  quota_decision refused;
  refused.admitted = false;
  refused.limit = limit_by_index[static_cast<std::size_t>(which - 1)];
  refused.retry_after = milliseconds(std::max<long long>(1, v[1].integer()));
  refused.notify = v[2].integer() == 1;
  if (auto* c = refused_[static_cast<std::size_t>(which - 1)]) c->inc();
  co_return refused;
}

asio::awaitable<std::error_code> quotas::record(std::string_view platform, std::string_view channel_id,
                                                token_usage used, bool at_once) {
  auto key = usage_key(platform, channel_id, format_day(utc_day_of(system_clock::now())));
  usage_sum turn;
  turn.prompt_tokens = std::max<std::int64_t>(0, used.prompt_tokens);
  turn.completion_tokens = std::max<std::int64_t>(0, used.completion_tokens);
  turn.turns = 1;
  if (batching_ && !at_once) {
    pending_[std::move(key)] += turn;
    co_return std::error_code{};
  }
  usage_sums one;
  one.emplace(std::move(key), turn);
  co_return co_await write_usage(one, false);
}

asio::awaitable<std::error_code> quotas::flush_usage() {
  if (pending_.empty() || flushing_) co_return std::error_code{};  // one flush at a time
  flushing_ = true;
  auto sums = std::exchange(pending_, {});
  const auto ec = co_await write_usage(sums, true);
  flushing_ = false;
  // Kept only when surely not applied (the connection was down, nothing was written): a
  // timeout may have been applied, and counting a second of usage twice is worse than
  // losing it.
  if (ec == make_error_code(errc::not_connected)) {
    for (const auto& [key, sum] : sums) pending_[key] += sum;
  }
  co_return ec;
}

asio::awaitable<std::error_code> quotas::write_usage(const usage_sums& sums, bool only_if_connected) {
  redis::request req(redis::request::options{.fail_if_disconnected = only_if_connected});
  std::vector<bool> refreshed;
  for (const auto& [key, sum] : sums) {
    req.push("HINCRBY", key, "prompt_tokens", sum.prompt_tokens);
    req.push("HINCRBY", key, "completion_tokens", sum.completion_tokens);
    req.push("HINCRBY", key, "turns", sum.turns);
    refreshed.push_back(conn_.expiries().due(key));
    if (refreshed.back()) req.push("EXPIRE", key, static_cast<std::int64_t>(usage_ttl.count()));
  }
  auto r = co_await conn_.exec(std::move(req));
  if (!r) co_return r.error();
  for (const auto& reply : *r)
    if (reply.is_error()) co_return make_error_code(errc::redis_error);
  // A key whose turns are exactly this write's was created by it (another connection may
  // have deleted it since this one refreshed it): it needs its TTL now, not a memo interval later.
  redis::request expire;
  std::size_t at = 0, i = 0;
  for (const auto& [key, sum] : sums) {
    if (!refreshed[i] && (*r)[at + 2].to_integer().value_or(0) == sum.turns)
      expire.push("EXPIRE", key, static_cast<std::int64_t>(usage_ttl.count()));
    at += refreshed[i] ? 4 : 3;
    ++i;
  }
  if (expire.commands() == 0) co_return std::error_code{};
  // The sums are in: a failure here is not a failed write (a retry would count them twice).
  // The key then gets its TTL from the next write the memo finds due.
  auto expired = co_await conn_.exec(std::move(expire));
  if (!expired) log_usage_ttl_failure(expired.error());
  co_return std::error_code{};
}

asio::awaitable<result<std::vector<usage_day>>> read_usage(redis::connection& conn, std::string_view platform,
                                                           std::string_view channel_id, sys_days from, sys_days to) {
  if (!valid_range(from, to)) co_return make_error_code(errc::invalid_argument);
  std::vector<std::string> day_names;
  redis::request req;
  for (auto d = from; d <= to; d += days(1)) {
    day_names.push_back(format_day(d));
    req.push("HMGET", usage_key(platform, channel_id, day_names.back()), "prompt_tokens", "completion_tokens",
             "turns");
  }
  auto r = co_await conn.exec(std::move(req));
  if (!r) co_return r.error();
  std::vector<usage_day> out;
  for (std::size_t i = 0; i < r->size(); ++i) {
    if ((*r)[i].is_error()) co_return make_error_code(errc::redis_error);
    auto day = usage_of(std::move(day_names[i]), (*r)[i]);
    if (has_usage(day)) out.push_back(std::move(day));
  }
  co_return out;
}

asio::awaitable<result<std::vector<channel_usage>>> scan_usage(redis::connection& conn, sys_days from, sys_days to) {
  if (!valid_range(from, to)) co_return make_error_code(errc::invalid_argument);
  const auto first = format_day(from), last = format_day(to);  // YYYY-MM-DD sorts as the dates do
  std::vector<std::pair<std::string, usage_key_parts>> found;
  const auto pattern = std::string(usage_key_prefix) + "*";
  auto keys = co_await redis::scan_keys(conn, pattern);
  if (!keys) co_return keys.error();
  for (auto& key : *keys) {
    auto parts = parse_usage_key(key);
    if (parts && parts->day >= first && parts->day <= last) found.emplace_back(std::move(key), std::move(*parts));
  }

  std::map<std::pair<std::string, std::string>, std::vector<usage_day>> by_channel;
  constexpr std::size_t batch = 500;  // HMGETs per round trip
  for (std::size_t start = 0; start < found.size(); start += batch) {
    const auto end = std::min(found.size(), start + batch);
    redis::request req;
    for (auto i = start; i < end; ++i) req.push("HMGET", found[i].first, "prompt_tokens", "completion_tokens", "turns");
    auto r = co_await conn.exec(std::move(req));
    if (!r) co_return r.error();
    for (auto i = start; i < end; ++i) {
      const auto& reply = (*r)[i - start];
      if (reply.is_error()) co_return make_error_code(errc::redis_error);
      auto& parts = found[i].second;
      auto day = usage_of(std::move(parts.day), reply);
      if (has_usage(day)) by_channel[{parts.platform, parts.channel_id}].push_back(std::move(day));
    }
  }
  std::vector<channel_usage> out;
  for (auto& [channel, list] : by_channel) {
    std::sort(list.begin(), list.end(), [](const usage_day& a, const usage_day& b) { return a.day < b.day; });
    out.push_back(channel_usage{channel.first, channel.second, std::move(list)});
  }
  co_return out;
}

}  // namespace stargazer::platform
