#pragma once
// The pure rules of quotas and usage accounting (docs/operations.md, "Quotas and usage";
// keys in docs/protocol.md §5.10): rates written as N/period, the limits a turn is held
// to, UTC days as YYYY-MM-DD, the Redis key names and the one polite notice. The Redis side
// (the token bucket script, usage counters) is platform/quota.hpp.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace stargazer::platform {

// N turns per period as a token bucket: up to N at once, refilled continuously at N per
// period. turns == 0: no limit.
struct rate {
  std::uint32_t turns = 0;
  std::chrono::milliseconds period{0};
  bool enabled() const { return turns > 0 && period.count() > 0; }
  friend bool operator==(const rate&, const rate&) = default;
};

inline constexpr std::uint32_t max_rate_turns = 1'000'000;
// Longer periods would keep a bucket key longer than the usage it protects is interesting.
inline constexpr std::chrono::milliseconds max_rate_period{std::chrono::hours(24 * 7)};

// "20/min", "600/h", "5/10s", "1000/day" (units s, sec, min, h, hour, d, day, and their
// plurals; an optional count before the unit); empty: off. The error says what is wrong,
// without the flag's name (the caller knows it).
std::variant<rate, std::string> parse_rate(std::string_view text);
// For messages and logs: "20 per minute", "600 per hour", "off".
std::string describe(const rate& r);

// The limits turns are held to (--rate-user, --rate-instance, --budget-instance-tokens).
// "Instance" is the Redis platform's word; on every other platform it is the channel.
struct quota_settings {
  rate per_user;
  rate per_instance;
  std::uint64_t daily_tokens_per_instance = 0;  // prompt + completion per UTC day; 0: off
  // A token budget reads each turn's usage before the next turn of the instance.
  bool budgets_tokens() const { return daily_tokens_per_instance > 0; }
  bool enabled() const { return per_user.enabled() || per_instance.enabled() || budgets_tokens(); }
  friend bool operator==(const quota_settings&, const quota_settings&) = default;
};

enum class quota_limit { rate_user, rate_instance, budget_instance_tokens };
// The name of the flag that sets it, without dashes: "rate-user", "rate-instance",
// "budget-instance-tokens" (REST errors, metrics labels, logs).
std::string_view to_string(quota_limit limit);

// UTC calendar days.
std::chrono::sys_days utc_day_of(std::chrono::system_clock::time_point t);
std::string format_day(std::chrono::sys_days day);  // YYYY-MM-DD
// Exactly YYYY-MM-DD naming a real date (2024-02-30 is refused); nullopt otherwise.
std::optional<std::chrono::sys_days> parse_day(std::string_view text);
// From `t` to the next UTC midnight, when a day's budget starts again (at least 1 ms).
std::chrono::milliseconds until_next_utc_day(std::chrono::system_clock::time_point t);

// Usage is kept per day for this long (the key's TTL, renewed by every write of its day).
inline constexpr std::chrono::seconds usage_ttl{90LL * 24 * 3600};
// The longest range the usage route and `stargazer usage` read at once.
inline constexpr int max_usage_days = 366;

// sg:usage:{platform}:{channel}:{YYYY-MM-DD}: hash prompt_tokens, completion_tokens, turns.
inline constexpr std::string_view usage_key_prefix = "sg:usage:";
std::string usage_key(std::string_view platform, std::string_view channel_id, std::string_view day);
// The parts of a usage key; nullopt for a key of another shape. The platform never holds
// ':' and the day is the last 10 characters, so a channel id may hold ':' (Matrix rooms).
struct usage_key_parts {
  std::string platform;
  std::string channel_id;
  std::string day;
};
std::optional<usage_key_parts> parse_usage_key(std::string_view key);

// Who a limit counts: a user (on the Redis platform each instance has its own roster of
// user ids, so there the instance is part of the name) or a channel.
std::string user_subject(std::string_view platform, std::string_view channel_id, std::string_view user_id);
std::string channel_subject(std::string_view platform, std::string_view channel_id);
// sg:quota:{limit}:{subject}: the token bucket (hash tokens, at).
std::string quota_bucket_key(quota_limit limit, std::string_view subject);
// sg:quota:notice:{limit}:{subject}: set while the subject has been told it is over the limit.
std::string quota_notice_key(quota_limit limit, std::string_view subject);

// The one short reply a chat user gets when a limit holds a turn back.
std::string quota_notice_text(quota_limit limit, std::chrono::milliseconds retry_after);
// Whole seconds to wait, rounded up, at least 1 (Retry-After).
std::int64_t retry_after_seconds(std::chrono::milliseconds retry_after);

}  // namespace stargazer::platform
