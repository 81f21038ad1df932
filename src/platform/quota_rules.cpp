#include "stargazer/platform/quota_rules.hpp"

#include <fmt/format.h>

#include <array>
#include <charconv>
#include <utility>

namespace stargazer::platform {

namespace {

using namespace std::chrono;

// A whole decimal number of at most `max_digits` digits filling `text`.
std::optional<std::uint64_t> whole_number(std::string_view text, std::size_t max_digits) {
  if (text.empty() || text.size() > max_digits || text.find_first_not_of("0123456789") != std::string_view::npos)
    return std::nullopt;
  std::uint64_t value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

std::optional<seconds> unit_length(std::string_view unit) {
  static constexpr std::array<std::pair<std::string_view, std::int64_t>, 17> units{{
      {"s", 1},        {"sec", 1},       {"secs", 1},   {"second", 1}, {"seconds", 1},
      {"min", 60},     {"mins", 60},     {"minute", 60}, {"minutes", 60},
      {"h", 3600},     {"hr", 3600},     {"hour", 3600}, {"hours", 3600},
      {"d", 86400},    {"day", 86400},   {"days", 86400}, {"hrs", 3600},
  }};
  for (const auto& [name, length] : units)
    if (name == unit) return seconds(length);
  return std::nullopt;
}

std::string plural(std::int64_t n, std::string_view unit) {
  return fmt::format("{} {}{}", n, unit, n == 1 ? "" : "s");
}

// "about 40 seconds", "about 3 minutes", "about 2 hours": rounded up, so the user is never
// told to come back too early.
std::string approximately(milliseconds wait) {
  const auto s = retry_after_seconds(wait);
  if (s < 90) return "about " + plural(s, "second");
  if (s < 90 * 60) return "about " + plural((s + 59) / 60, "minute");
  return "about " + plural((s + 3599) / 3600, "hour");
}

}  // namespace

std::variant<rate, std::string> parse_rate(std::string_view text) {
  if (text.empty()) return rate{};
  const auto fail = [&] {
    return fmt::format("'{}' is not N/period, e.g. 20/min, 600/h, 5/10s or 1000/day (empty: off)", text);
  };
  const auto slash = text.find('/');
  if (slash == std::string_view::npos) return fail();
  const auto turns = whole_number(text.substr(0, slash), 7);
  if (!turns) return fail();
  if (*turns < 1 || *turns > max_rate_turns)
    return fmt::format("'{}': N is 1 to {} turns", text, max_rate_turns);
  auto period = text.substr(slash + 1);
  const auto unit_at = period.find_first_not_of("0123456789");
  if (unit_at == std::string_view::npos) return fail();
  std::uint64_t count = 1;
  if (unit_at > 0) {
    const auto given = whole_number(period.substr(0, unit_at), 7);
    if (!given || *given == 0) return fail();
    count = *given;
  }
  const auto unit = unit_length(period.substr(unit_at));
  if (!unit) return fmt::format("'{}': the period's unit is one of s, min, h, d", text);
  const milliseconds length = *unit * static_cast<std::int64_t>(count);
  if (length > max_rate_period) return fmt::format("'{}': the period is at most 7 days", text);
  return rate{static_cast<std::uint32_t>(*turns), length};
}

std::string describe(const rate& r) {
  if (!r.enabled()) return "off";
  const auto s = duration_cast<seconds>(r.period).count();
  if (s % 86400 == 0) return fmt::format("{} per {}", r.turns, plural(s / 86400, "day"));
  if (s % 3600 == 0) return fmt::format("{} per {}", r.turns, plural(s / 3600, "hour"));
  if (s % 60 == 0) return fmt::format("{} per {}", r.turns, plural(s / 60, "minute"));
  return fmt::format("{} per {}", r.turns, plural(s, "second"));
}

std::string_view to_string(quota_limit limit) {
  switch (limit) {
    case quota_limit::rate_user: return "rate-user";
    case quota_limit::rate_instance: return "rate-instance";
    case quota_limit::budget_instance_tokens: return "budget-instance-tokens";
  }
  return "unknown";
}

sys_days utc_day_of(system_clock::time_point t) { return floor<days>(t); }

std::string format_day(sys_days day) {
  const year_month_day ymd{day};
  return fmt::format("{:04}-{:02}-{:02}", static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                     static_cast<unsigned>(ymd.day()));
}

std::optional<sys_days> parse_day(std::string_view text) {
  if (text.size() != 10 || text[4] != '-' || text[7] != '-') return std::nullopt;
  const auto y = whole_number(text.substr(0, 4), 4);
  const auto m = whole_number(text.substr(5, 2), 2);
  const auto d = whole_number(text.substr(8, 2), 2);
  if (!y || !m || !d) return std::nullopt;
  const year_month_day ymd{year(static_cast<int>(*y)), month(static_cast<unsigned>(*m)), day(static_cast<unsigned>(*d))};
  if (!ymd.ok()) return std::nullopt;
  return sys_days(ymd);
}

milliseconds until_next_utc_day(system_clock::time_point t) {
  const auto next = utc_day_of(t) + days(1);
  const auto left = duration_cast<milliseconds>(next - t);
  return left.count() > 0 ? left : milliseconds(1);
}

std::string usage_key(std::string_view platform, std::string_view channel_id, std::string_view day) {
  return fmt::format("{}{}:{}:{}", usage_key_prefix, platform, channel_id, day);
}

std::optional<usage_key_parts> parse_usage_key(std::string_view key) {
  if (!key.starts_with(usage_key_prefix)) return std::nullopt;
  key.remove_prefix(usage_key_prefix.size());
  const auto colon = key.find(':');
  // platform ':' channel (at least one character) ':' YYYY-MM-DD
  if (colon == std::string_view::npos || colon == 0 || key.size() < colon + 1 + 1 + 1 + 10) return std::nullopt;
  const auto day = key.substr(key.size() - 10);
  if (key[key.size() - 11] != ':' || !parse_day(day)) return std::nullopt;
  return usage_key_parts{std::string(key.substr(0, colon)),
                         std::string(key.substr(colon + 1, key.size() - 11 - (colon + 1))), std::string(day)};
}

std::string user_subject(std::string_view platform, std::string_view channel_id, std::string_view user_id) {
  if (platform == "redis") return fmt::format("{}:{}:{}", platform, channel_id, user_id);
  return fmt::format("{}:{}", platform, user_id);
}

std::string channel_subject(std::string_view platform, std::string_view channel_id) {
  return fmt::format("{}:{}", platform, channel_id);
}

std::string quota_bucket_key(quota_limit limit, std::string_view subject) {
  return fmt::format("sg:quota:{}:{}", to_string(limit), subject);
}

std::string quota_notice_key(quota_limit limit, std::string_view subject) {
  return fmt::format("sg:quota:notice:{}:{}", to_string(limit), subject);
}

std::string quota_notice_text(quota_limit limit, milliseconds retry_after) {
  switch (limit) {
    case quota_limit::rate_user:
      return fmt::format("You're sending messages faster than I can keep up with. I'll read along, and can answer "
                         "again in {}.",
                         approximately(retry_after));
    case quota_limit::rate_instance:
      return fmt::format("There are more messages here than I can answer right now. I'll read along, and can answer "
                         "again in {}.",
                         approximately(retry_after));
    case quota_limit::budget_instance_tokens:
      return "I've used up today's conversation budget here, so I'll be quiet until it resets at midnight UTC. "
             "Your messages are still kept.";
  }
  return {};
}

std::int64_t retry_after_seconds(milliseconds retry_after) {
  const auto s = (retry_after.count() + 999) / 1000;
  return s < 1 ? 1 : s;
}

}  // namespace stargazer::platform
