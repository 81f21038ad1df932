#include "stargazer/platform/message_cache.hpp"

#include "stargazer/core/error.hpp"
#include "stargazer/redis/connection.hpp"
#include "stargazer/redis/expiry_memo.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
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

// Writes the message hash, indexes it and deletes the oldest beyond the cap, hashes with
// their entries. KEYS: the hash, the channel index. ARGV from `first`: the hash's TTL, the
// score, the index's TTL ('0': not refreshed this time), how many to keep ('0': no check
// this time), then the hash's fields and values. (The deleted hash keys come from the
// index, not KEYS: fine on one Redis or Sentinel, not Cluster.)
constexpr std::string_view store_function = R"lua(
local function store_message(first)
  redis.call('HSET', KEYS[1], unpack(ARGV, first + 4))
  redis.call('EXPIRE', KEYS[1], ARGV[first])
  redis.call('ZADD', KEYS[2], ARGV[first + 1], KEYS[1])
  if ARGV[first + 2] ~= '0' then redis.call('EXPIRE', KEYS[2], ARGV[first + 2]) end
  local keep = tonumber(ARGV[first + 3])
  if keep > 0 then
    local excess = redis.call('ZCARD', KEYS[2]) - keep
    if excess > 0 then
      local oldest = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
      redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
      redis.call('DEL', unpack(oldest))
    end
  end
end
)lua";

const std::string& store_script_text() {
  static const std::string text = std::string(store_function) + "store_message(1)\nreturn 1\n";
  return text;
}

const redis::script& store_script() {
  static const redis::script s(store_script_text());
  return s;
}

// Whether this store checks the channel's cap. Every store would cost a ZCARD per
// message; every `step`-th store of a channel in this process lets a channel hold up to
// `step` - 1 messages beyond the cap (times the processes storing it) between checks,
// about 1.5 % at the default cap, and none for caps under 128.
bool cap_check_due(const std::string& index_key) {
  static std::mutex mutex;
  static std::unordered_map<std::string, std::size_t> stores;
  const std::size_t step = std::clamp<std::size_t>(history_keep / 64, 1, 16);
  if (step == 1) return true;
  std::lock_guard lock(mutex);
  if (stores.size() > 100'000) stores.clear();  // a forgotten count only checks early
  return stores[index_key]++ % step == 0;
}

}  // namespace

void message_cache::keep_per_channel(std::size_t messages) { history_keep = messages; }
std::size_t message_cache::kept_per_channel() { return history_keep; }

message_cache::store_write message_cache::prepare_store(redis::connection& conn, std::string_view platform,
                                                        std::string_view channel_id, const cached_message& m,
                                                        std::string hash_key) {
  if (hash_key.empty()) hash_key = message_key(platform, channel_id, m.message_id);
  auto index_key = channel_key(platform, channel_id);
  auto index_ttl = conn.expiries().due(index_key) ? std::to_string(ttl.count()) : "0";
  auto keep = history_keep > 0 && cap_check_due(index_key) ? std::to_string(history_keep) : "0";
  const auto score = fmt::format("{:.3f}", m.timestamp);
  return {{std::move(hash_key), std::move(index_key)},
          {std::to_string(ttl.count()), score, std::move(index_ttl), std::move(keep), "message_id", m.message_id,
           "user_id", m.user_id, "user_name", m.user_name, "text", m.text, "timestamp", score, "is_bot",
           m.is_bot ? "1" : "0", "reply_to_id", m.reply_to_id}};
}

std::string_view message_cache::store_lua() { return store_function; }

std::vector<std::vector<std::string>> message_cache::store_commands(redis::connection& conn, std::string_view platform,
                                                                    std::string_view channel_id,
                                                                    const cached_message& m, std::string hash_key) {
  auto w = prepare_store(conn, platform, channel_id, m, std::move(hash_key));
  // EVAL, not EVALSHA: these commands go into callers' MULTIs, where a NOSCRIPT could not
  // be answered by loading the script.
  std::vector<std::string> command{"EVAL", store_script_text(), "2", std::move(w.keys[0]), std::move(w.keys[1])};
  command.insert(command.end(), std::make_move_iterator(w.args.begin()), std::make_move_iterator(w.args.end()));
  return {std::move(command)};
}

boost::asio::awaitable<std::error_code> message_cache::store(const std::string& platform,
                                                             const std::string& channel_id, const cached_message& m,
                                                             std::string hash_key) {
  auto w = prepare_store(conn_, platform, channel_id, m, std::move(hash_key));
  const std::string& index_ttl = w.args[store_write::index_ttl];
  if (w.args[store_write::keep] != "0") {
    auto r = co_await conn_.eval(store_script(), w.keys, w.args);
    if (!r) co_return r.error();
    if (r->is_error()) co_return make_error_code(errc::redis_error);
  } else {
    // Without the cap check the writes need no script (a Lua call costs Redis about as much
    // as the three commands): each is idempotent, and a run cut off between them leaves at
    // worst a hash with its TTL and no index entry, which the entry's re-run indexes.
    redis::request req;
    req.push_with({"HSET", w.keys[0]}, std::vector<std::string>(w.args.begin() + store_write::first_field, w.args.end()));
    req.push("EXPIRE", w.keys[0], w.args[store_write::hash_ttl]);
    req.push("ZADD", w.keys[1], w.args[store_write::score], w.keys[0]);
    if (index_ttl != "0") req.push("EXPIRE", w.keys[1], index_ttl);
    auto r = co_await conn_.exec(std::move(req));
    if (!r) co_return r.error();
    if (std::any_of(r->begin(), r->end(), [](const redis::reply& x) { return x.is_error(); }))
      co_return make_error_code(errc::redis_error);
  }
  if (memo_) memo_->put(w.keys[0], m);
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
