#include "stargazer/worker/channel_state.hpp"

#include "stargazer/core/error.hpp"
#include "stargazer/platform/channel_keys.hpp"
#include "stargazer/platform/message_cache.hpp"
#include "stargazer/redis/connection.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>

namespace stargazer::worker {

namespace asio = boost::asio;

namespace {

std::string unix_text(double t) { return fmt::format("{:.3f}", t); }

double unix_value(const redis::reply& r) { return r.is_bulk() ? std::strtod(r.str().c_str(), nullptr) : 0.0; }

// A Redis error reply is an error of the caller's command here: nothing answers one on purpose.
std::error_code first_error(const std::vector<redis::reply>& replies) {
  for (const auto& r : replies)
    if (r.is_error()) return make_error_code(errc::redis_error);
  return {};
}

// A round starts once per interval: the hash and its expiry together.
const redis::script begin_round_script{R"(
if redis.call('HSETNX', KEYS[1], 'started', ARGV[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
)"};

// Only a round that still exists is finished (a late finish must not leave a hash without
// `started` and expiry that makes the next round look done).
const redis::script finish_round_script{R"(
if redis.call('HEXISTS', KEYS[1], 'started') == 1 then
  return redis.call('HSET', KEYS[1], 'finished', ARGV[1])
end
return 0
)"};

}  // namespace

channel_state::channel_state(redis::connection& conn) : conn_(conn) {}

std::string channel_state::key(std::string_view platform, std::string_view channel_id, std::string_view what) {
  return stargazer::platform::channel_state_key(platform, channel_id, what);
}

std::string channel_state::heartbeat_visit_key(std::string_view platform, std::string_view channel_id) {
  return fmt::format("sg:heartbeat:last:{}:{}", platform, channel_id);
}

asio::awaitable<std::error_code> channel_state::run(std::vector<std::vector<std::string>> commands) {
  redis::request req;
  for (const auto& c : commands) req.push_range(c);
  auto r = co_await conn_.exec(std::move(req));
  if (!r) co_return r.error();
  co_return first_error(*r);
}

asio::awaitable<result<channel_gate>> channel_state::gate(const std::string& platform,
                                                         const std::string& channel_id) {
  const std::string no_sender;  // named: GCC 12 mishandles braced temporaries in co_await
  auto r = co_await read_for_turn(platform, channel_id, no_sender);
  if (!r) co_return r.error();
  co_return r->gate;
}

asio::awaitable<result<channel_state::turn_reads>> channel_state::read_for_turn(const std::string& platform,
                                                                              const std::string& channel_id,
                                                                              const std::string& sender_id) {
  std::vector<std::string> command{"MGET", key(platform, channel_id, "mode"), key(platform, channel_id, "quiet"),
                                   key(platform, channel_id, "cooldown"), key(platform, channel_id, "forgotten")};
  if (!sender_id.empty()) command.push_back(platform::identity_user_key(platform, sender_id));
  redis::request req;
  req.push_range(command);
  auto r = co_await conn_.exec_one(std::move(req));
  if (!r) co_return r.error();
  if (!r->is_array() || r->elements().size() != command.size() - 1) co_return make_error_code(errc::unexpected_reply);
  const auto& v = r->elements();
  turn_reads out;
  auto& g = out.gate;
  if (v[0].is_bulk()) g.mode = parse_reply_policy(v[0].str());  // an unknown value counts as unset
  g.quiet = !v[1].is_nil();
  g.cooling_down = !v[2].is_nil();
  g.forgotten_before = unix_value(v[3]);
  if (v.size() > 4 && v[4].is_bulk()) out.sender_unified_id = v[4].str();
  co_return out;
}

asio::awaitable<result<std::optional<platform::unified_identity>>> channel_state::person(const std::string& unified_id) {
  co_return co_await platform::identity_by_id(conn_, unified_id);
}

asio::awaitable<std::error_code> channel_state::set_mode(const std::string& platform,
                                                         const std::string& channel_id, reply_policy mode) {
  std::vector<std::vector<std::string>> commands{
      {"SET", key(platform, channel_id, "mode"), std::string(to_string(mode))}};
  co_return co_await run(std::move(commands));
}

asio::awaitable<std::error_code> channel_state::set_quiet(const std::string& platform,
                                                          const std::string& channel_id,
                                                          std::chrono::seconds length, double now) {
  const auto k = key(platform, channel_id, "quiet");
  const auto until = unix_text(now + static_cast<double>(length.count()));
  std::vector<std::vector<std::string>> commands;
  if (length.count() <= 0) commands.push_back({"DEL", k});
  else commands.push_back({"SET", k, until, "EX", std::to_string(length.count())});
  co_return co_await run(std::move(commands));
}

asio::awaitable<std::error_code> channel_state::forget(const std::string& platform,
                                                       const std::string& channel_id, double before) {
  std::vector<std::vector<std::string>> commands{{"SET", key(platform, channel_id, "forgotten"), unix_text(before),
                                                  "EX", std::to_string(platform::message_cache::ttl.count())}};
  co_return co_await run(std::move(commands));
}

asio::awaitable<std::error_code> channel_state::start_cooldown(const std::string& platform,
                                                               const std::string& channel_id,
                                                               std::chrono::seconds length) {
  if (length.count() <= 0) co_return std::error_code{};
  std::vector<std::vector<std::string>> commands{
      {"SET", key(platform, channel_id, "cooldown"), "1", "EX", std::to_string(length.count())}};
  co_return co_await run(std::move(commands));
}

asio::awaitable<result<long long>> channel_state::cached_messages(const std::string& platform,
                                                                  const std::string& channel_id) {
  const auto index = platform::message_cache::channel_key(platform, channel_id);
  auto r = co_await conn_.command("ZCARD", index);
  if (!r) co_return r.error();
  if (!r->is_integer()) co_return make_error_code(errc::unexpected_reply);
  co_return r->integer();
}

asio::awaitable<result<bool>> channel_state::claim_backfill(const std::string& platform,
                                                            const std::string& channel_id, std::chrono::seconds ttl,
                                                            double now) {
  redis::request req;
  req.push("SET", key(platform, channel_id, "backfilled"), unix_text(now), "NX", "EX",
           std::to_string(ttl.count()));
  auto r = co_await conn_.exec_one(std::move(req));
  if (!r) co_return r.error();
  if (r->is_error()) co_return make_error_code(errc::redis_error);
  co_return !r->is_nil();
}

asio::awaitable<std::error_code> channel_state::note_bot_spoke(const std::string& platform,
                                                               const std::string& channel_id, double now) {
  std::vector<std::vector<std::string>> commands{
      {"ZADD", std::string(heartbeat_channels_key), unix_text(now), platform + ":" + channel_id}};
  co_return co_await run(std::move(commands));
}

asio::awaitable<result<std::vector<channel_ref>>> channel_state::heartbeat_channels(double now,
                                                                                    std::chrono::seconds within,
                                                                                    std::size_t limit) {
  redis::request req;
  const std::string index(heartbeat_channels_key);
  req.push("ZREMRANGEBYSCORE", index, "-inf", "(" + unix_text(now - static_cast<double>(within.count())));
  req.push("ZRANGE", index, "0", std::to_string(std::max<long long>(1, static_cast<long long>(limit)) - 1));
  auto r = co_await conn_.exec(std::move(req));
  if (!r) co_return r.error();
  if (auto ec = first_error(*r)) co_return ec;
  std::vector<channel_ref> out;
  if (r->size() != 2 || !(*r)[1].is_array()) co_return make_error_code(errc::unexpected_reply);
  for (const auto& member : (*r)[1].elements()) {
    const auto& text = member.str();
    const auto colon = text.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) continue;  // not ours
    out.push_back({text.substr(0, colon), text.substr(colon + 1)});
  }
  co_return out;
}

asio::awaitable<result<bool>> channel_state::visited(const std::string& platform, const std::string& channel_id) {
  const auto visit = heartbeat_visit_key(platform, channel_id);
  auto r = co_await conn_.command("EXISTS", visit);
  if (!r) co_return r.error();
  co_return r->to_integer().value_or(0) > 0;
}

asio::awaitable<result<bool>> channel_state::claim_heartbeat_visit(const std::string& platform,
                                                                   const std::string& channel_id,
                                                                   std::chrono::seconds ttl, double now) {
  redis::request req;
  req.push("SET", heartbeat_visit_key(platform, channel_id), unix_text(now), "NX", "EX",
           std::to_string(std::max<long long>(1, ttl.count())));
  auto r = co_await conn_.exec_one(std::move(req));
  if (!r) co_return r.error();
  if (r->is_error()) co_return make_error_code(errc::redis_error);
  co_return !r->is_nil();
}

asio::awaitable<result<heartbeat_round>> channel_state::round() {
  redis::request req;
  req.push("HMGET", heartbeat_round_key, "started", "finished");
  auto r = co_await conn_.exec_one(std::move(req));
  if (!r) co_return r.error();
  if (!r->is_array() || r->elements().size() != 2) co_return make_error_code(errc::unexpected_reply);
  heartbeat_round out;
  out.exists = !r->elements()[0].is_nil();
  out.finished = !r->elements()[1].is_nil();
  co_return out;
}

asio::awaitable<result<bool>> channel_state::begin_round(std::chrono::seconds interval, double now) {
  const std::vector<std::string> keys{std::string(heartbeat_round_key)};
  const std::vector<std::string> args{unix_text(now), std::to_string(std::max<long long>(1, interval.count()))};
  auto r = co_await conn_.eval(begin_round_script, keys, args);
  if (!r) co_return r.error();
  if (r->is_error()) co_return make_error_code(errc::redis_error);
  co_return r->to_integer().value_or(0) == 1;
}

asio::awaitable<std::error_code> channel_state::finish_round(double now) {
  const std::vector<std::string> keys{std::string(heartbeat_round_key)};
  const std::vector<std::string> args{unix_text(now)};
  auto r = co_await conn_.eval(finish_round_script, keys, args);
  if (!r) co_return r.error();
  co_return r->is_error() ? make_error_code(errc::redis_error) : std::error_code{};
}

}  // namespace stargazer::worker
