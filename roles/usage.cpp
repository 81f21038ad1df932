// `stargazer usage [--instance ID] [--from DAY] [--to DAY] [--json]`: the tokens and turns
// the workers recorded per UTC day and channel (sg:usage:*, docs/protocol.md §5.10), read
// from Redis. One instance: its days (a Redis-platform instance is its channel); otherwise
// every platform's channels, found by SCAN.

#include <utility>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "common.hpp"
#include "roles.hpp"

#include "stargazer/core/json.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/platform/quota.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <iostream>

namespace stargazer::roles {

namespace {

namespace asio = boost::asio;

constexpr std::chrono::milliseconds redis_timeout{3000};

struct totals {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t turns = 0;

  void add(const platform::usage_day& d) {
    prompt_tokens += d.prompt_tokens;
    completion_tokens += d.completion_tokens;
    turns += d.turns;
  }
  std::string json() const {
    return fmt::format(R"({{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{},"turns":{}}})", prompt_tokens,
                       completion_tokens, prompt_tokens + completion_tokens, turns);
  }
};

asio::awaitable<std::vector<platform::channel_usage>> collect(redis::connection& conn, const usage_options& o) {
  if (!co_await conn.wait_connected(redis_timeout))
    throw std::runtime_error(fmt::format("cannot reach Redis within {} s", redis_timeout.count() / 1000));
  const auto from = *platform::parse_day(o.from);  // checked and defaulted by the parser
  const auto to = *platform::parse_day(o.to);
  std::vector<platform::channel_usage> out;
  if (!o.instance.empty()) {
    auto days = co_await platform::read_usage(conn, "redis", o.instance, from, to);
    if (!days) throw std::runtime_error("cannot read the usage: " + days.error().message());
    if (!days->empty()) out.push_back(platform::channel_usage{"redis", o.instance, std::move(*days)});
    co_return out;
  }
  auto all = co_await platform::scan_usage(conn, from, to);
  if (!all) throw std::runtime_error("cannot read the usage: " + all.error().message());
  co_return std::move(*all);
}

void print_table(const std::vector<platform::channel_usage>& channels) {
  std::vector<std::vector<std::string>> rows{{"PLATFORM", "CHANNEL", "DATE", "PROMPT", "COMPLETION", "TOTAL", "TURNS"}};
  totals all;
  for (const auto& c : channels)
    for (const auto& d : c.days) {
      rows.push_back({c.platform, c.channel_id, d.day, std::to_string(d.prompt_tokens),
                      std::to_string(d.completion_tokens), std::to_string(d.prompt_tokens + d.completion_tokens),
                      std::to_string(d.turns)});
      all.add(d);
    }
  rows.push_back({"TOTAL", "", "", std::to_string(all.prompt_tokens), std::to_string(all.completion_tokens),
                  std::to_string(all.prompt_tokens + all.completion_tokens), std::to_string(all.turns)});
  std::vector<std::size_t> width(rows.front().size(), 0);
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  for (const auto& r : rows) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); ++i) {
      // Names left-aligned, numbers right-aligned; the last column is not padded after.
      if (i < 3) line += fmt::format("{:<{}}  ", r[i], width[i]);
      else line += fmt::format("{:>{}}{}", r[i], width[i], i + 1 < r.size() ? "  " : "");
    }
    std::cout << line << "\n";
  }
}

void print_json(const std::vector<platform::channel_usage>& channels, const usage_options& o) {
  std::string out = fmt::format(R"({{"from":"{}","to":"{}","channels":[)", o.from, o.to);
  totals all;
  for (std::size_t i = 0; i < channels.size(); ++i) {
    const auto& c = channels[i];
    totals mine;
    std::string days;
    for (const auto& d : c.days) {
      days += fmt::format(R"({}{{"date":"{}","prompt_tokens":{},"completion_tokens":{},"total_tokens":{},"turns":{}}})",
                          days.empty() ? "" : ",", d.day, d.prompt_tokens, d.completion_tokens,
                          d.prompt_tokens + d.completion_tokens, d.turns);
      mine.add(d);
      all.add(d);
    }
    out += fmt::format(R"({}{{"platform":{},"channel_id":{},"days":[{}],"total":{}}})", i ? "," : "",
                       json::quoted(c.platform), json::quoted(c.channel_id), days, mine.json());
  }
  std::cout << out << "],\"total\":" << all.json() << "}\n";
}

}  // namespace

int run_usage(const parsed_command& cmd) {
  return run_redis_command(cmd.cfg, "usage", redis_timeout, [&](redis::connection& conn) -> asio::awaitable<void> {
    const auto channels = co_await collect(conn, cmd.usage);
    if (cmd.usage.json) print_json(channels, cmd.usage);
    else print_table(channels);
  });
}

}  // namespace stargazer::roles
