#include "stargazer/platform/message_cache.hpp"

#include "stargazer/core/error.hpp"
#include "stargazer/redis/connection.hpp"

#include <fmt/format.h>

#include <cstdlib>
#include <list>
#include <unordered_map>

namespace stargazer::platform {

// Least recently used cached messages by hash key.
struct message_cache::memo {
  explicit memo(std::size_t c) : capacity(c) {}
  std::size_t capacity;
  std::list<std::pair<std::string, cached_message>> order;  // most recent first
  std::unordered_map<std::string, decltype(order)::iterator> by_key;

  const cached_message* find(const std::string& key) {
    auto it = by_key.find(key);
    if (it == by_key.end()) return nullptr;
    order.splice(order.begin(), order, it->second);
    return &it->second->second;
  }
  void put(const std::string& key, const cached_message& m) {
    if (auto it = by_key.find(key); it != by_key.end()) {
      it->second->second = m;
      order.splice(order.begin(), order, it->second);
      return;
    }
    order.emplace_front(key, m);
    by_key.emplace(key, order.begin());
    if (order.size() > capacity) {
      by_key.erase(order.back().first);
      order.pop_back();
    }
  }
};

message_cache::message_cache(redis::connection& conn, std::size_t memo_capacity)
    : conn_(conn), memo_(memo_capacity > 0 ? std::make_unique<memo>(memo_capacity) : nullptr) {}

message_cache::~message_cache() = default;

std::string message_cache::channel_key(std::string_view platform, std::string_view channel_id) {
  return fmt::format("channel_msgs:{}:{}", platform, channel_id);
}

std::string message_cache::message_key(std::string_view platform, std::string_view channel_id,
                                       std::string_view message_id) {
  return fmt::format("sg:msg:{}:{}:{}", platform, channel_id, message_id);
}

namespace {

std::size_t history_keep = 1000;

// KEYS: the channel index. ARGV: score, hash key, ttl, how many to keep (0: all). Indexes
// the message and deletes the oldest beyond the cap, hashes with their entries. (The hash
// keys come from the index, not KEYS: fine on one Redis or Sentinel, not Cluster.)
constexpr std::string_view index_script = R"lua(
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local keep = tonumber(ARGV[4])
if keep > 0 then
  local excess = redis.call('ZCARD', KEYS[1]) - keep
  if excess > 0 then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, excess - 1)
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
    redis.call('DEL', unpack(oldest))
  end
end
return 1
)lua";

}  // namespace

void message_cache::keep_per_channel(std::size_t messages) { history_keep = messages; }

std::vector<std::vector<std::string>> message_cache::store_commands(std::string_view platform,
                                                                    std::string_view channel_id,
                                                                    const cached_message& m, std::string hash_key) {
  if (hash_key.empty()) hash_key = message_key(platform, channel_id, m.message_id);
  const auto score = fmt::format("{:.3f}", m.timestamp);
  return {{"HSET", hash_key, "message_id", m.message_id, "user_id", m.user_id, "user_name", m.user_name, "text",
           m.text, "timestamp", score, "is_bot", m.is_bot ? "1" : "0", "reply_to_id", m.reply_to_id},
          {"EXPIRE", hash_key, std::to_string(ttl.count())},
          // EVAL, not EVALSHA: these commands go into callers' MULTIs, where a NOSCRIPT
          // could not be answered by loading the script.
          {"EVAL", std::string(index_script), "1", channel_key(platform, channel_id), score, hash_key,
           std::to_string(ttl.count()), std::to_string(history_keep)}};
}

boost::asio::awaitable<std::error_code> message_cache::store(const std::string& platform,
                                                             const std::string& channel_id, const cached_message& m,
                                                             std::string hash_key) {
  if (hash_key.empty()) hash_key = message_key(platform, channel_id, m.message_id);
  redis::request req;
  for (const auto& c : store_commands(platform, channel_id, m, hash_key)) req.push_range(c);
  auto r = co_await conn_.exec(std::move(req));
  if (!r) co_return r.error();
  if (memo_) memo_->put(hash_key, m);
  co_return std::error_code{};
}

namespace {

// One HMGET row of the fields below; nullopt when the hash expired.
std::optional<cached_message> from_row(const redis::reply& row) {
  const auto& f = row.elements();
  if (f.size() != 7 || f[3].is_nil()) return std::nullopt;
  return cached_message{f[0].str(), f[1].str(), f[2].str(), f[3].str(), std::atof(f[4].str().c_str()),
                        f[5].str() == "1", f[6].str()};
}

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

namespace {

// KEYS: the channel index, the original's hash, the edit's hash. ARGV: the author, the new
// text, the ttl. The original keeps `edited_as` (the hash now in the index), so a second
// edit replaces the first in the index.
const redis::script edit_script(R"lua(
local original = redis.call('HMGET', KEYS[2], 'user_id', 'timestamp', 'edited_as')
if not original[1] or original[1] ~= ARGV[1] then return 0 end
local fields = redis.call('HGETALL', KEYS[2])
local copy = {}
for i = 1, #fields, 2 do
  if fields[i] ~= 'edited_as' then
    copy[#copy + 1] = fields[i]
    copy[#copy + 1] = fields[i] == 'text' and ARGV[2] or fields[i + 1]
  end
end
redis.call('HSET', KEYS[3], unpack(copy))
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('ZREM', KEYS[1], original[3] or KEYS[2])
redis.call('ZADD', KEYS[1], original[2], KEYS[3])
redis.call('HSET', KEYS[2], 'edited_as', KEYS[3])
return 1
)lua");

}  // namespace

boost::asio::awaitable<result<bool>> message_cache::edit(const std::string& platform, const std::string& channel_id,
                                                         const std::string& message_id, const std::string& author_id,
                                                         const std::string& edit_id, const std::string& text) {
  const std::vector<std::string> keys{channel_key(platform, channel_id), message_key(platform, channel_id, message_id),
                                      message_key(platform, channel_id, edit_id)};
  const std::vector<std::string> args{author_id, text, std::to_string(ttl.count())};
  auto r = co_await conn_.eval(edit_script, keys, args);
  if (!r) co_return r.error();
  if (r->is_error()) co_return make_error_code(errc::redis_error);
  co_return r->to_integer().value_or(0) == 1;
}

boost::asio::awaitable<result<std::vector<cached_message>>> message_cache::recent(const std::string& platform,
                                                                                  const std::string& channel_id,
                                                                                  std::size_t limit,
                                                                                  std::optional<double> before) {
  const auto max_score = before ? fmt::format("({:.3f}", *before) : std::string("+inf");
  if (memo_) co_return co_await recent_remembered(channel_key(platform, channel_id), limit, max_score);
  const std::vector<std::string> keys{channel_key(platform, channel_id)};
  const std::vector<std::string> args{max_score, std::to_string(limit)};
  auto rows = co_await conn_.eval(recent_script(), keys, args);
  if (!rows) co_return rows.error();
  if (rows->is_error()) co_return make_error_code(errc::redis_error);
  std::vector<cached_message> out;
  for (auto& row : rows->elements())
    if (auto m = from_row(row)) out.push_back(std::move(*m));
  co_return out;
}

boost::asio::awaitable<result<std::vector<cached_message>>> message_cache::recent_remembered(
    const std::string& index_key, std::size_t limit, const std::string& max_score) {
  auto keys = co_await conn_.command("ZREVRANGEBYSCORE", index_key, max_score, "-inf", "LIMIT", 0, limit);
  if (!keys) co_return keys.error();
  if (keys->is_error()) co_return make_error_code(errc::redis_error);
  // Copies, not pointers into the memo: storing the fetched ones may evict others.
  const auto& index = keys->elements();
  std::vector<std::optional<cached_message>> found(index.size());
  std::vector<std::size_t> missing;
  for (std::size_t i = 0; i < index.size(); ++i) {
    if (const auto* m = memo_->find(index[i].str())) found[i] = *m;
    else missing.push_back(i);
  }
  if (!missing.empty()) {
    redis::request req;
    for (const auto i : missing)
      req.push("HMGET", index[i].str(), "message_id", "user_id", "user_name", "text", "timestamp", "is_bot",
               "reply_to_id");
    auto rows = co_await conn_.exec(std::move(req));
    if (!rows) co_return rows.error();
    for (std::size_t j = 0; j < missing.size() && j < rows->size(); ++j) {
      found[missing[j]] = from_row((*rows)[j]);
      if (found[missing[j]]) memo_->put(index[missing[j]].str(), *found[missing[j]]);
    }
  }
  std::vector<cached_message> out;
  for (auto& m : found)
    if (m) out.push_back(std::move(*m));  // absent: expired
  co_return out;
}

}  // namespace stargazer::platform
