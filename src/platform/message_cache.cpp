#include "stargazer/platform/message_cache.hpp"

#include "stargazer/redis/connection.hpp"

#include <fmt/format.h>

#include <cstdlib>

namespace stargazer::platform {

std::string message_cache::channel_key(std::string_view platform, std::string_view channel_id) {
  return fmt::format("channel_msgs:{}:{}", platform, channel_id);
}

std::string message_cache::message_key(std::string_view platform, std::string_view channel_id,
                                       std::string_view message_id) {
  return fmt::format("sg:msg:{}:{}:{}", platform, channel_id, message_id);
}

std::vector<std::vector<std::string>> message_cache::store_commands(std::string_view platform,
                                                                    std::string_view channel_id,
                                                                    const cached_message& m, std::string hash_key) {
  if (hash_key.empty()) hash_key = message_key(platform, channel_id, m.message_id);
  const auto score = fmt::format("{:.3f}", m.timestamp);
  return {{"HSET", hash_key, "message_id", m.message_id, "user_id", m.user_id, "user_name", m.user_name, "text",
           m.text, "timestamp", score, "is_bot", m.is_bot ? "1" : "0", "reply_to_id", m.reply_to_id},
          {"EXPIRE", hash_key, std::to_string(ttl.count())},
          {"ZADD", channel_key(platform, channel_id), score, hash_key},
          {"EXPIRE", channel_key(platform, channel_id), std::to_string(ttl.count())}};
}

boost::asio::awaitable<std::error_code> message_cache::store(const std::string& platform,
                                                             const std::string& channel_id, const cached_message& m,
                                                             std::string hash_key) {
  redis::request req;
  for (const auto& c : store_commands(platform, channel_id, m, std::move(hash_key))) req.push_range(c);
  auto r = co_await conn_.exec(std::move(req));
  co_return r ? std::error_code{} : r.error();
}

boost::asio::awaitable<result<std::vector<cached_message>>> message_cache::recent(const std::string& platform,
                                                                                  const std::string& channel_id,
                                                                                  std::size_t limit,
                                                                                  std::optional<double> before) {
  const auto max = before ? fmt::format("({:.3f}", *before) : std::string("+inf");
  auto keys =
      co_await conn_.command("ZREVRANGEBYSCORE", channel_key(platform, channel_id), max, "-inf", "LIMIT", 0, limit);
  if (!keys) co_return keys.error();
  std::vector<cached_message> out;
  if (keys->elements().empty()) co_return out;
  redis::request req;
  for (const auto& k : keys->elements())
    req.push("HMGET", k.str(), "message_id", "user_id", "user_name", "text", "timestamp", "is_bot", "reply_to_id");
  auto rows = co_await conn_.exec(std::move(req));
  if (!rows) co_return rows.error();
  for (auto& row : *rows) {
    auto& f = row.elements();
    if (f.size() != 7 || f[3].is_nil()) continue;  // expired
    out.push_back(cached_message{f[0].str(), f[1].str(), f[2].str(), f[3].str(), std::atof(f[4].str().c_str()),
                                 f[5].str() == "1", f[6].str()});
  }
  co_return out;
}

}  // namespace stargazer::platform
