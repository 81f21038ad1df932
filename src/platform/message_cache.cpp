#include "stargazer/platform/message_cache.hpp"

#include "stargazer/core/error.hpp"
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

namespace {

// The newest `limit` hashes of a channel in one round trip (it ran on every turn as a
// ZREVRANGEBYSCORE plus one HMGET per message). The hash keys come from the index, not
// KEYS: fine on one Redis (or Sentinel), which is what Stargazer supports, not Cluster.
const redis::script& recent_script() {
  static const redis::script s(R"lua(
local keys = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '-inf', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i, k in ipairs(keys) do
  out[i] = redis.call('HMGET', k, 'message_id', 'user_id', 'user_name', 'text', 'timestamp', 'is_bot', 'reply_to_id')
end
return out
)lua");
  return s;
}

}  // namespace

boost::asio::awaitable<result<std::vector<cached_message>>> message_cache::recent(const std::string& platform,
                                                                                  const std::string& channel_id,
                                                                                  std::size_t limit,
                                                                                  std::optional<double> before) {
  const std::vector<std::string> keys{channel_key(platform, channel_id)};
  const std::vector<std::string> args{before ? fmt::format("({:.3f}", *before) : std::string("+inf"),
                                      std::to_string(limit)};
  auto rows = co_await conn_.eval(recent_script(), keys, args);
  if (!rows) co_return rows.error();
  if (rows->is_error()) co_return make_error_code(errc::redis_error);
  std::vector<cached_message> out;
  for (auto& row : rows->elements()) {
    auto& f = row.elements();
    if (f.size() != 7 || f[3].is_nil()) continue;  // expired
    out.push_back(cached_message{f[0].str(), f[1].str(), f[2].str(), f[3].str(), std::atof(f[4].str().c_str()),
                                 f[5].str() == "1", f[6].str()});
  }
  co_return out;
}

}  // namespace stargazer::platform
