#pragma once
// The built-in tools (docs/tools.md); none needs the internet. current_time, calculator,
// remember_note / recall_notes / forget_note (per channel, in Redis), create_file (a
// text, CSV or JSON file sent to the channel), read_channel_history (the message
// cache), and channel_info (pinned to the gateway: it asks the live adapter).

#include "stargazer/core/result.hpp"
#include "stargazer/platform/channel_keys.hpp"
#include "stargazer/tools/registry.hpp"

#include <chrono>
#include <functional>
#include <optional>
#include <string>

namespace stargazer::redis {
class connection;
}

namespace stargazer::tools {

// A message of a channel as read_channel_history tells it to the model.
struct history_line {
  std::string user_id;
  std::string user_name;
  std::string text;
  double timestamp = 0;  // unix seconds
  bool is_bot = false;
};

// Reads a channel's most recent messages, newest first (the message cache, wired by roles/).
using channel_history_reader = std::function<boost::asio::awaitable<result<std::vector<history_line>>>(
    const std::string& platform, const std::string& channel_id, std::size_t limit)>;

// `redis` must outlive the registry.
void add_builtin_tools(registry& r, redis::connection& redis, channel_history_reader history);

// The calculator's evaluator: + - * / % ^, parentheses, unary minus, constants pi and e,
// functions sqrt abs sin cos tan asin acos atan ln log log10 log2 exp floor ceil round
// min max pow. The error says where the expression went wrong.
std::variant<double, std::string> evaluate_expression(std::string_view expression);

// "2026-11-25 21:04:05 CET (UTC+01:00), Wednesday" for an IANA zone name; nullopt when
// the zone is unknown.
std::optional<std::string> describe_time(std::chrono::system_clock::time_point t, const std::string& zone);

using platform::notes_key;

}  // namespace stargazer::tools
