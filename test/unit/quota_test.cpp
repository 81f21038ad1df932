// Quotas and usage, the pure parts: rates written as N/period, UTC days, usage keys, the
// notice, and the flags and `stargazer usage` options as the command line takes them.

#include "roles/options.hpp"
#include "stargazer/platform/quota_rules.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

using namespace stargazer;
using namespace stargazer::platform;
using namespace std::chrono_literals;

namespace {

struct parse_outcome {
  std::variant<parsed_command, parse_exit> result;
  std::string out, err;
};

parse_outcome parse(std::vector<std::string> args) {
  args.insert(args.begin(), "stargazer");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  auto r = parse_command_line(static_cast<int>(argv.size()), argv.data(), out, err);
  return {std::move(r), out.str(), err.str()};
}

const parsed_command& command_of(const parse_outcome& o) { return std::get<parsed_command>(o.result); }
int status_of(const parse_outcome& o) { return std::get<parse_exit>(o.result).status; }

rate rate_of(std::string_view text) {
  auto r = parse_rate(text);
  INFO(text);
  REQUIRE(std::holds_alternative<rate>(r));
  return std::get<rate>(r);
}

std::string error_of(std::string_view text) {
  auto r = parse_rate(text);
  INFO(text);
  REQUIRE(std::holds_alternative<std::string>(r));
  return std::get<std::string>(r);
}

}  // namespace

TEST_CASE("rates are N/period with an optional count before the unit, and empty is off", "[quota]") {
  CHECK(rate_of("20/min") == rate{20, 60s});
  CHECK(rate_of("600/h") == rate{600, 1h});
  CHECK(rate_of("5/10s") == rate{5, 10s});
  CHECK(rate_of("1000/day") == rate{1000, 24h});
  CHECK(rate_of("3/2hours") == rate{3, 2h});
  CHECK(rate_of("1/7d") == rate{1, 7 * 24h});
  CHECK_FALSE(rate_of("").enabled());
  CHECK(rate_of("20/min").enabled());
  CHECK(describe(rate_of("20/min")) == "20 per 1 minute");
  CHECK(describe(rate_of("600/h")) == "600 per 1 hour");
  CHECK(describe(rate_of("5/10s")) == "5 per 10 seconds");
  CHECK(describe(rate{}) == "off");
}

TEST_CASE("bad rates are refused with a message saying what is wrong", "[quota]") {
  for (const auto* bad : {"20", "/min", "20/", "x/min", " 20/min", "1e3/min", "-1/min", "20/0s", "12345678/min"})
    CHECK(error_of(bad).find("N/period") != std::string::npos);
  CHECK(error_of("0/min").find("1 to 1000000") != std::string::npos);
  CHECK(error_of("2000000/min").find("1 to 1000000") != std::string::npos);
  for (const auto* bad : {"20/fortnight", "20/m", "20/min ", "20/m2", "20//min", "20/min/h"})
    CHECK(error_of(bad).find("unit is one of s, min, h, d") != std::string::npos);
  CHECK(error_of("20/8d").find("at most 7 days") != std::string::npos);
}

TEST_CASE("quota settings are on when any limit is", "[quota]") {
  quota_settings s;
  CHECK_FALSE(s.enabled());
  s.daily_tokens_per_instance = 1;
  CHECK(s.enabled());
  s = {};
  s.per_user = rate{1, 1s};
  CHECK(s.enabled());
  CHECK(to_string(quota_limit::rate_user) == "rate-user");
  CHECK(to_string(quota_limit::rate_instance) == "rate-instance");
  CHECK(to_string(quota_limit::budget_instance_tokens) == "budget-instance-tokens");
}

TEST_CASE("UTC days: YYYY-MM-DD both ways, real dates only, and the time to the next day", "[quota]") {
  const auto leap = parse_day("2024-02-29");
  REQUIRE(leap);
  CHECK(format_day(*leap) == "2024-02-29");
  CHECK(format_day(*leap + std::chrono::days(1)) == "2024-03-01");
  for (const auto* bad : {"2023-02-29", "2024-02-30", "2024-13-01", "2024-00-10", "2024-2-01", "2024-02-1",
                          "2024/02/01", "20240201", "", "2024-02-01x", "abcd-ef-gh"})
    CHECK_FALSE(parse_day(bad));

  const auto noon = std::chrono::sys_days(*parse_day("2025-03-04")) + 12h;
  CHECK(format_day(utc_day_of(noon)) == "2025-03-04");
  CHECK(until_next_utc_day(noon) == std::chrono::milliseconds(12h));
  const auto last_ms = std::chrono::sys_days(*parse_day("2025-03-05")) - 1ms;
  CHECK(format_day(utc_day_of(last_ms)) == "2025-03-04");
  CHECK(until_next_utc_day(last_ms) == 1ms);
}

TEST_CASE("usage keys name platform, channel and day, and a channel id may hold colons", "[quota]") {
  CHECK(usage_key("redis", "inst-1", "2025-01-02") == "sg:usage:redis:inst-1:2025-01-02");
  const auto parts = parse_usage_key("sg:usage:matrix:!room:example.org:2025-01-02");
  REQUIRE(parts);
  CHECK(parts->platform == "matrix");
  CHECK(parts->channel_id == "!room:example.org");
  CHECK(parts->day == "2025-01-02");
  CHECK_FALSE(parse_usage_key("sg:usage:redis:2025-01-02"));  // no channel
  CHECK_FALSE(parse_usage_key("sg:usage:redis:inst:2025-13-02"));
  CHECK_FALSE(parse_usage_key("sg:other:redis:inst:2025-01-02"));
}

TEST_CASE("quota subjects: Redis-platform users are named within their instance", "[quota]") {
  CHECK(quota_bucket_key(quota_limit::rate_user, user_subject("redis", "inst", "u1")) ==
        "sg:quota:rate-user:redis:inst:u1");
  CHECK(quota_bucket_key(quota_limit::rate_user, user_subject("discord", "chan", "42")) ==
        "sg:quota:rate-user:discord:42");
  CHECK(quota_bucket_key(quota_limit::rate_instance, channel_subject("webchat", "lobby")) ==
        "sg:quota:rate-instance:webchat:lobby");
  CHECK(quota_notice_key(quota_limit::budget_instance_tokens, channel_subject("redis", "inst")) ==
        "sg:quota:notice:budget-instance-tokens:redis:inst");
}

TEST_CASE("the notice says when to come back, rounded up, and Retry-After is whole seconds, at least 1", "[quota]") {
  CHECK(quota_notice_text(quota_limit::rate_user, 1500ms).find("about 2 seconds") != std::string::npos);
  CHECK(quota_notice_text(quota_limit::rate_instance, 1ms).find("about 1 second.") != std::string::npos);
  CHECK(quota_notice_text(quota_limit::rate_user, 5min + 1s).find("about 6 minutes") != std::string::npos);
  CHECK(quota_notice_text(quota_limit::rate_instance, 3h).find("about 3 hours") != std::string::npos);
  CHECK(quota_notice_text(quota_limit::budget_instance_tokens, 1h).find("midnight UTC") != std::string::npos);
  CHECK(retry_after_seconds(0ms) == 1);
  CHECK(retry_after_seconds(1001ms) == 2);
  CHECK(retry_after_seconds(60000ms) == 60);
}

TEST_CASE("quota flags: off by default, set by flag or environment, bad values name the flag", "[quota][config]") {
  auto defaults = parse({});
  REQUIRE(std::holds_alternative<parsed_command>(defaults.result));
  CHECK(command_of(defaults).cfg.rate_user.empty());
  CHECK(command_of(defaults).cfg.rate_instance.empty());
  CHECK(command_of(defaults).cfg.budget_instance_tokens == 0);

  ::setenv("SG_RATE_INSTANCE", "600/h", 1);
  auto o = parse({"--rate-user", "20/min", "--budget-instance-tokens", "50000"});
  ::unsetenv("SG_RATE_INSTANCE");
  REQUIRE(std::holds_alternative<parsed_command>(o.result));
  const auto& c = command_of(o).cfg;
  CHECK(c.rate_user == "20/min");
  CHECK(c.rate_instance == "600/h");
  CHECK(c.budget_instance_tokens == 50000);
  const auto text = render_config(c);
  CHECK(text.find("rate-user = \"20/min\"") != std::string::npos);
  CHECK(text.find("rate-instance = \"600/h\"") != std::string::npos);
  CHECK(text.find("budget-instance-tokens = 50000") != std::string::npos);

  // The rendered configuration loads again with the same limits.
  const auto path = (std::filesystem::temp_directory_path() / ("sg-quota-" + std::to_string(::getpid()) + ".toml")).string();
  std::ofstream(path) << text;
  auto again = parse({"--config", path});
  std::filesystem::remove(path);
  REQUIRE(std::holds_alternative<parsed_command>(again.result));
  CHECK(command_of(again).cfg.rate_user == "20/min");
  CHECK(command_of(again).cfg.rate_instance == "600/h");
  CHECK(command_of(again).cfg.budget_instance_tokens == 50000);

  const struct {
    std::vector<std::string> args;
    const char* flag;
  } bad[] = {{{"--rate-user", "20/fortnight"}, "--rate-user"},
             {{"--rate-user", "lots"}, "--rate-user"},
             {{"--rate-instance", "0/min"}, "--rate-instance"},
             {{"--rate-instance", "5"}, "--rate-instance"},
             {{"--budget-instance-tokens=-5", "--log-level=info"}, "--budget-instance-tokens"},
             {{"--budget-instance-tokens", "many"}, "--budget-instance-tokens"}};
  for (const auto& b : bad) {
    auto refused = parse(b.args);
    INFO(b.args[0] << " " << b.args[1] << ": " << refused.err);
    REQUIRE(std::holds_alternative<parse_exit>(refused.result));
    CHECK(status_of(refused) == 2);
    CHECK(refused.err.find(b.flag) != std::string::npos);
  }
}

TEST_CASE("stargazer usage: dates default to the last 30 days, and bad dates and ranges name the flag", "[quota][config]") {
  auto o = parse({"usage", "--json"});
  REQUIRE(std::holds_alternative<parsed_command>(o.result));
  const auto& cmd = command_of(o);
  CHECK(cmd.what == command::usage);
  CHECK(cmd.usage.json);
  CHECK(cmd.usage.instance.empty());
  const auto from = parse_day(cmd.usage.from), to = parse_day(cmd.usage.to);
  REQUIRE(from);
  REQUIRE(to);
  CHECK(*to - *from == std::chrono::days(29));
  CHECK(cmd.usage.to == format_day(utc_day_of(std::chrono::system_clock::now())));

  auto chosen = parse({"usage", "--instance", "inst-1", "--from", "2025-01-01", "--to", "2025-12-31"});
  REQUIRE(std::holds_alternative<parsed_command>(chosen.result));
  CHECK(command_of(chosen).usage.instance == "inst-1");
  CHECK(command_of(chosen).usage.from == "2025-01-01");
  CHECK(command_of(chosen).usage.to == "2025-12-31");

  const struct {
    std::vector<std::string> args;
    const char* flag;
  } bad[] = {{{"usage", "--from", "2025-02-30"}, "--from"},
             {{"usage", "--to", "yesterday"}, "--to"},
             {{"usage", "--from", "2025-02-01", "--to", "2025-01-01"}, "--from"},
             {{"usage", "--from", "2024-01-01", "--to", "2025-01-01"}, "--from"},  // 367 days
             {{"usage", "--instance", "a b"}, "--instance"}};
  for (const auto& b : bad) {
    auto refused = parse(b.args);
    INFO(refused.err);
    REQUIRE(std::holds_alternative<parse_exit>(refused.result));
    CHECK(status_of(refused) == 2);
    CHECK(refused.err.find(b.flag) != std::string::npos);
  }
}
