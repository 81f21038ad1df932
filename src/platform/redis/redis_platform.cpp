#include "stargazer/platform/redis/redis_platform.hpp"

#include "stargazer/bus/lock.hpp"
#include "stargazer/bus/outbound_consumer.hpp"
#include "stargazer/core/error.hpp"
#include "stargazer/core/json.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/platform/channel_keys.hpp"
#include "stargazer/platform/message_cache.hpp"
#include "stargazer/redis/connection.hpp"
#include "stargazer/redis/expiry_memo.hpp"
#include "stargazer/redis/scan.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>

namespace stargazer::platform {

namespace asio = boost::asio;

namespace {

constexpr const char* instances_key = "redis_platform:instances";
std::string meta_key(std::string_view id) { return "redis_platform:meta:" + std::string(id); }
std::string users_key(std::string_view id) { return "redis_platform:users:" + std::string(id); }
std::string file_key(std::string_view id) { return "redis_platform:file:" + std::string(id); }
std::string history_key(std::string_view id) { return message_cache::channel_key("redis", id); }

// Fields of the meta hash that callers' metadata may not overwrite.
bool reserved_meta_field(std::string_view f) {
  return f == "display_name" || f == "created_at" || f == "api_key" || f == "api_key_sha256" || f == "instance_id";
}

std::string random_api_key() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("no randomness for an API key");
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string key = "sgk_";
  for (auto b : bytes) key.push_back(alphabet[b & 63]);  // 6 random bits per char, 192 bits in all
  return key;
}

std::string metadata_json(const std::map<std::string, std::string>& m) {
  std::string out = "{";
  for (const auto& [k, v] : m) {
    if (out.size() > 1) out.push_back(',');
    json::append_quoted(out, k);
    out.push_back(':');
    json::append_quoted(out, v);
  }
  return out + "}";
}

std::optional<user_info> parse_user(std::string_view text) {
  rapidjson::Document d;
  d.Parse(text.data(), text.size());
  if (d.HasParseError() || !d.IsObject()) return std::nullopt;
  const auto str = [&](const char* k) {
    return d.HasMember(k) && d[k].IsString() ? std::string(d[k].GetString(), d[k].GetStringLength()) : std::string();
  };
  user_info u{str("user_id"), str("display_name"), str("registered_at"), {}};
  if (d.HasMember("metadata") && d["metadata"].IsObject())
    for (auto& m : d["metadata"].GetObject())
      if (m.value.IsString()) u.metadata.emplace(m.name.GetString(), m.value.GetString());
  u.admin = d.HasMember("admin") && d["admin"].IsBool() && d["admin"].GetBool();
  return u;
}

instance_info info_from_hash(const std::string& id, const redis::reply& r) {
  instance_info info;
  info.instance_id = id;
  const auto& kv = r.elements();
  for (std::size_t i = 0; i + 1 < kv.size(); i += 2) {
    const auto& k = kv[i].str();
    if (k == "display_name") info.display_name = kv[i + 1].str();
    else if (k == "created_at") info.created_at = kv[i + 1].str();
    else if (!reserved_meta_field(k)) info.metadata.emplace(k, kv[i + 1].str());
  }
  return info;
}

// A send as one script, so a delivery is all or nothing and the outbound consumer needs
// no claim (delivers_atomically): nothing is sent when the message key was delivered
// before (its hash has a message_id, which is returned); else the writes, the event
// published and appended, and for the turn's last send the turn_complete event after it.
// The outbound entry's order mark, when there is one, is written first: when it advances
// `done`, no run of this entry wrote it before, so none sent it and the marker need not be
// read. (An out-of-memory Redis refuses the script at that first write. A later error, a
// key of the wrong type, leaves the mark without the send: the re-run finds that `done`
// did not advance, reads the marker and sends, possibly after the entry's successors.)
// `emit` takes the event stream, then ARGV[1..5]: the response channel, the stream's
// maxlen, its TTL ('0': not refreshed this time), the event, the turn_complete event
// ('': not the turn's last send); ARGV[6] is the order mark's sequence ('0': none). Each
// event is published on its own (the seed's Pub/Sub contract: one JSON event per message);
// the stream gets one entry per send, the turn_complete event as its second field.
constexpr std::string_view emit_function = R"lua(
local function already_sent(marker)
  local sent = redis.call('HGET', marker, 'message_id')
  if sent and #sent > 0 then return sent end
  return nil
end
local function emit(stream)
  redis.call('PUBLISH', ARGV[1], ARGV[4])
  if ARGV[5] == '' then
    redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[4])
  else
    redis.call('PUBLISH', ARGV[1], ARGV[5])
    redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[4], 'turn_complete', ARGV[5])
  end
  if ARGV[3] ~= '0' then redis.call('EXPIRE', stream, ARGV[3]) end
  return ''
end
)lua";

// A message: KEYS: its hash (the delivery marker), the channel index, the event stream,
// the order set; ARGV[7..]: message_cache's store_message arguments.
const redis::script& send_script() {
  static const redis::script s(std::string(emit_function) + std::string(message_cache::store_lua()) +
                               std::string(bus::mark_done_lua()) + R"lua(
local sent = nil
local first_run = ARGV[6] ~= '0' and mark_done(KEYS[4], ARGV[6])
if not first_run then sent = already_sent(KEYS[1]) end
if not sent then
  store_message(7)
  sent = emit(KEYS[3])
end
return sent
)lua");
  return s;
}

// A file: KEYS: the file's hash, the event stream, the message key ('' when none), the
// order set; ARGV[7]: the file's TTL, ARGV[8]: the message key's TTL, ARGV[9]: the file
// id, ARGV[10..]: the file hash's fields and values.
const redis::script& send_file_script() {
  static const redis::script s(std::string(emit_function) + std::string(bus::mark_done_lua()) + R"lua(
local sent = nil
local first_run = ARGV[6] ~= '0' and mark_done(KEYS[4], ARGV[6])
if KEYS[3] ~= '' and not first_run then sent = already_sent(KEYS[3]) end
if not sent then
  if KEYS[3] ~= '' then
    redis.call('HSET', KEYS[3], 'message_id', ARGV[9])
    redis.call('EXPIRE', KEYS[3], ARGV[8])
  end
  redis.call('HSET', KEYS[1], unpack(ARGV, 10))
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  sent = emit(KEYS[2])
end
return sent
)lua");
  return s;
}

std::string turn_complete_event(std::string_view response_nonce, double at) {
  return fmt::format(R"({{"type":"turn_complete","nonce":{},"timestamp":{}}})", json::quoted(response_nonce),
                     json::quoted(iso_time(at)));
}

}  // namespace

double now_unix() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

std::string iso_time(double unix_seconds) {
  const auto whole = static_cast<std::time_t>(unix_seconds);
  const auto millis = static_cast<int>((unix_seconds - static_cast<double>(whole)) * 1000);
  std::tm tm{};
  gmtime_r(&whole, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", buf, millis);
}

redis_platform::redis_platform(redis::connection& conn, bus::event_bus& bus) : conn_(conn), bus_(bus) {}

// ---- instances -------------------------------------------------------------------------

task<result<created_instance>> redis_platform::create_instance(std::string instance_id, std::string display_name,
                                                               std::map<std::string, std::string> metadata) {
  if (instance_id.empty()) instance_id = bus::random_hex_id().substr(0, 16);
  created_instance out;
  out.api_key = random_api_key();
  out.info = {instance_id, display_name.empty() ? instance_id : display_name, iso_time(now_unix()), std::move(metadata)};
  // HSETNX on created_at first: an existing instance id is refused, not overwritten.
  auto created = co_await conn_.command("HSETNX", meta_key(instance_id), "created_at", out.info.created_at);
  if (!created) co_return created.error();
  if (created->integer() == 0) co_return make_error_code(errc::invalid_argument);
  std::vector<std::string> fields{"display_name", out.info.display_name, "api_key_sha256", sha256_hex(out.api_key)};
  for (const auto& [k, v] : out.info.metadata) {
    fields.push_back(k);
    fields.push_back(v);
  }
  redis::request write;
  write.push("MULTI");
  write.push("SADD", instances_key, instance_id);
  write.push_with({"HSET", meta_key(instance_id)}, fields);
  write.push("EXEC");
  auto r = co_await conn_.exec(std::move(write));
  if (!r) co_return r.error();
  co_return out;
}

task<result<std::vector<instance_info>>> redis_platform::list_instances() {
  auto ids = co_await conn_.command("SMEMBERS", instances_key);
  if (!ids) co_return ids.error();
  std::vector<std::string> sorted;
  for (auto& e : ids->elements()) sorted.push_back(e.str());
  std::sort(sorted.begin(), sorted.end());
  std::vector<instance_info> out;
  if (sorted.empty()) co_return out;
  redis::request req;
  for (const auto& id : sorted) req.push("HGETALL", meta_key(id));
  auto hashes = co_await conn_.exec(std::move(req));
  if (!hashes) co_return hashes.error();
  for (std::size_t i = 0; i < sorted.size(); ++i)
    if (!(*hashes)[i].elements().empty()) out.push_back(info_from_hash(sorted[i], (*hashes)[i]));
  co_return out;
}

task<result<std::optional<instance_info>>> redis_platform::get_instance(const std::string& instance_id) {
  auto r = co_await conn_.command("HGETALL", meta_key(instance_id));
  if (!r) co_return r.error();
  if (!r->is_array() || r->elements().empty()) co_return std::optional<instance_info>{};
  co_return std::optional<instance_info>(info_from_hash(instance_id, *r));
}

task<result<bool>> redis_platform::update_instance(const std::string& instance_id,
                                                   const std::optional<std::string>& display_name,
                                                   const std::map<std::string, std::string>& metadata) {
  if (!co_await instance_exists(instance_id)) co_return false;
  std::vector<std::string> fields;
  if (display_name && !display_name->empty()) {
    fields.push_back("display_name");
    fields.push_back(*display_name);
  }
  for (const auto& [k, v] : metadata) {
    fields.push_back(k);
    fields.push_back(v);
  }
  if (fields.empty()) co_return true;  // nothing to change: skip the write
  redis::request req;
  req.push_with({"HSET", meta_key(instance_id)}, fields);
  auto r = co_await conn_.exec(std::move(req));
  if (!r) co_return r.error();
  co_return true;
}

task<result<bool>> redis_platform::delete_instance(const std::string& instance_id) {
  const auto& names = bus_.names();
  redis::request req;
  req.push("MULTI");
  req.push("SREM", instances_key, instance_id);
  req.push("DEL", meta_key(instance_id), users_key(instance_id), history_key(instance_id), events_stream(instance_id),
           message_ids_key(instance_id), bus::order_key(names.inbound_stream, "redis:" + instance_id),
           bus::order_key(names.outbound_stream("redis"), instance_id));
  // What the worker and the tools keep for the instance's channel: a re-created id starts clean.
  std::vector<std::string> channel_keys{"DEL"};
  for (auto& k : channel_owned_keys("redis", instance_id)) channel_keys.push_back(std::move(k));
  const auto channel = channel_subject("redis", instance_id);
  for (const auto limit : {quota_limit::rate_instance, quota_limit::budget_instance_tokens}) {
    channel_keys.push_back(quota_bucket_key(limit, channel));
    channel_keys.push_back(quota_notice_key(limit, channel));
  }
  req.push_range(channel_keys);
  req.push("EXEC");
  auto r = co_await conn_.exec(std::move(req));
  if (!r) co_return r.error();
  const auto& exec = r->back();
  const bool existed = exec.is_array() && !exec.elements().empty() && exec.elements()[0].integer() == 1;
  const auto swept = co_await delete_per_message_keys(instance_id);
  if (swept) co_return swept;
  co_return existed;
}

// Keys made per message, which no index lists completely (a forgotten or edited message's
// hash, Idempotency-Key results, delivery claims): found by one SCAN of the keyspace.
// Deleting an instance is rare and an operator's act, so the walk is affordable.
task<std::error_code> redis_platform::delete_per_message_keys(const std::string& instance_id) {
  const auto users = user_subject("redis", instance_id, "");  // the prefix of its users' subjects
  const std::array<std::string, 6> prefixes{message_cache::message_key("redis", instance_id, ""),
                                            idempotency_prefix(instance_id),
                                            bus::claim_key(message_cache::message_key("redis", instance_id, "")),
                                            usage_key("redis", instance_id, ""),
                                            quota_bucket_key(quota_limit::rate_user, users),
                                            quota_notice_key(quota_limit::rate_user, users)};
  const auto pattern = "*:" + instance_id + ":*";  // ids are [A-Za-z0-9._-]: no glob characters
  auto found = co_await redis::scan_keys(conn_, pattern);
  if (!found) co_return found.error();
  std::vector<std::string> doomed;
  for (auto& key : *found)
    if (std::any_of(prefixes.begin(), prefixes.end(), [&](const auto& prefix) { return key.starts_with(prefix); }))
      doomed.push_back(std::move(key));
  constexpr std::size_t batch = 1000;  // keys per UNLINK
  for (std::size_t start = 0; start < doomed.size(); start += batch) {
    redis::request unlink;
    std::vector<std::string> command{"UNLINK"};
    command.insert(command.end(), doomed.begin() + static_cast<std::ptrdiff_t>(start),
                   doomed.begin() + static_cast<std::ptrdiff_t>(std::min(doomed.size(), start + batch)));
    unlink.push_range(command);
    auto removed = co_await conn_.exec(std::move(unlink));
    if (!removed) co_return removed.error();
  }
  co_return std::error_code{};
}

task<bool> redis_platform::validate_api_key(const std::string& instance_id, const std::string& api_key) {
  auto r = co_await api_key_opens(instance_id, api_key);
  co_return r && *r;
}

task<bool> redis_platform::instance_exists(const std::string& instance_id) {
  auto r = co_await instance_known(instance_id);
  co_return r && *r;
}

task<result<bool>> redis_platform::api_key_opens(const std::string& instance_id, const std::string& api_key) {
  auto r = co_await conn_.command("HGET", meta_key(instance_id), "api_key_sha256");
  if (!r) co_return r.error();
  if (r->is_error()) co_return make_error_code(errc::redis_error);
  co_return r->is_bulk() && digest_equals(sha256_hex(api_key), r->str());
}

task<result<bool>> redis_platform::instance_known(const std::string& instance_id) {
  auto r = co_await conn_.command("SISMEMBER", instances_key, instance_id);
  if (!r) co_return r.error();
  if (!r->is_integer()) co_return make_error_code(errc::redis_error);
  co_return r->integer() == 1;
}

// ---- users -----------------------------------------------------------------------------

task<result<user_info>> redis_platform::register_user(const std::string& instance_id, const std::string& user_id,
                                                      const std::string& display_name,
                                                      const std::map<std::string, std::string>& metadata, bool admin) {
  user_info u{user_id, display_name, iso_time(now_unix()), metadata, admin};
  const auto record =
      fmt::format(R"({{"user_id":{},"display_name":{},"registered_at":{},"metadata":{},"admin":{}}})",
                  json::quoted(user_id), json::quoted(display_name), json::quoted(u.registered_at),
                  metadata_json(metadata), admin ? "true" : "false");
  auto r = co_await conn_.command("HSET", users_key(instance_id), user_id, record);
  if (!r) co_return r.error();
  co_return u;
}

task<result<std::vector<user_info>>> redis_platform::list_users(const std::string& instance_id) {
  auto r = co_await conn_.command("HGETALL", users_key(instance_id));
  if (!r) co_return r.error();
  std::vector<user_info> out;
  const auto& kv = r->elements();
  for (std::size_t i = 0; i + 1 < kv.size(); i += 2)
    if (auto u = parse_user(kv[i + 1].str())) out.push_back(std::move(*u));  // a corrupt record is skipped
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.user_id < b.user_id; });
  co_return out;
}

task<result<std::optional<user_info>>> redis_platform::get_user(const std::string& instance_id,
                                                                const std::string& user_id) {
  auto r = co_await conn_.command("HGET", users_key(instance_id), user_id);
  if (!r) co_return r.error();
  if (!r->is_bulk()) co_return std::optional<user_info>{};
  co_return parse_user(r->str());
}

task<result<bool>> redis_platform::delete_user(const std::string& instance_id, const std::string& user_id) {
  auto r = co_await conn_.command("HDEL", users_key(instance_id), user_id);
  if (!r) co_return r.error();
  co_return r->integer() == 1;
}

task<bool> redis_platform::user_exists(const std::string& instance_id, const std::string& user_id) {
  auto r = co_await conn_.command("HEXISTS", users_key(instance_id), user_id);
  co_return r && r->integer() == 1;
}

task<bool> redis_platform::has_users(const std::string& instance_id) {
  auto r = co_await conn_.command("HLEN", users_key(instance_id));
  co_return r && r->integer() > 0;
}

// ---- messages --------------------------------------------------------------------------

task<result<inject_result>> redis_platform::inject_message(const std::string& instance_id, inject_request req) {
  // One round trip for the preconditions: exists, roster size, the sender's record.
  redis::request check;
  check.push("SISMEMBER", instances_key, instance_id).push("HLEN", users_key(instance_id));
  check.push("HGET", users_key(instance_id), req.user_id);
  if (!req.once_key.empty()) check.push("GET", req.once_key);
  auto pre = co_await conn_.exec(std::move(check));
  if (!pre) co_return pre.error();
  for (const auto& reply : *pre)
    if (reply.is_error()) co_return make_error_code(errc::redis_error);  // e.g. LOADING: not "unknown"
  if ((*pre)[0].integer() != 1) co_return inject_result{inject_refusal::unknown_instance, {}};
  // Injected before (its answer was lost): neither history nor stream get it twice.
  if (!req.once_key.empty() && (*pre)[3].is_bulk())
    co_return inject_result{inject_refusal::none, (*pre)[3].str(), true};
  std::string user_name = req.user_name;
  bool admin = false;
  if ((*pre)[1].integer() > 0) {
    const auto user = (*pre)[2].is_bulk() ? parse_user((*pre)[2].str()) : std::nullopt;
    if (!user) co_return inject_result{inject_refusal::user_not_registered, {}};
    if (!user->display_name.empty()) user_name = user->display_name;
    admin = user->admin;
  } else if (user_name.empty()) {
    co_return inject_result{inject_refusal::user_name_required, {}};
  }

  const auto ts = now_unix();
  const auto ids_key = message_ids_key(instance_id);
  const auto score = fmt::format("{:.3f}", ts);
  const bool caller_id = !req.message_id.empty();
  // The ids remembered are bounded by the history cap, not by traffic: twice
  // --history-keep, which covers every user message the history may hold (it checks its cap
  // every few stores, message_cache.cpp); without a cap, those of the message TTL. Trimmed
  // after the ZADD (before it, the check would lose the oldest id it must find); an id
  // whose score is older than the newest 2 x cap (a gateway clock that far behind) goes
  // at once.
  const auto remembered = static_cast<std::int64_t>(2 * message_cache::kept_per_channel());
  const auto remember_id = [&](redis::request& r, const std::string& id) {
    if (remembered == 0)
      r.push("ZREMRANGEBYSCORE", ids_key, "-inf", fmt::format("({:.3f}", ts - static_cast<double>(message_ttl.count())));
    r.push("ZADD", ids_key, "NX", score, id);
    if (remembered > 0) r.push("ZREMRANGEBYRANK", ids_key, 0, -remembered - 1);
    r.push("EXPIRE", ids_key, message_ttl.count());
  };
  const std::size_t zadd_reply = remembered == 0 ? 1 : 0;
  if (caller_id) {
    // ZADD NX is the check and the set in one: of two requests with one id, one wins.
    redis::request claim;
    remember_id(claim, req.message_id);
    auto claimed = co_await conn_.exec(std::move(claim));
    if (!claimed) co_return claimed.error();
    if (!(*claimed)[zadd_reply].is_integer()) co_return make_error_code(errc::redis_error);
    if ((*claimed)[zadd_reply].integer() == 0) co_return inject_result{inject_refusal::message_id_reused, req.message_id};
  }

  bus::inbound_envelope e;
  e.platform = "redis";
  e.channel_id = instance_id;
  e.user_id = req.user_id;
  e.username = user_name;
  e.content = req.text;
  e.is_addressed = req.is_addressed;
  e.attachments = std::move(req.attachments);
  e.room_name = req.channel_name;
  e.timestamp = ts;
  e.message_id = caller_id ? req.message_id : bus::random_hex_id();
  e.reply_to = req.reply_to_id;
  e.reactions = req.reactions;
  e.extra = std::move(req.extra);
  if (admin) e.member_roles.emplace_back(bus::platform_admin_role);
  e.trace_id = bus::random_hex_id();
  e.response_nonce = req.response_nonce;
  // The worker stores a message with attachments itself: its copy describes them for the model.
  e.cached = e.attachments.empty();

  // A caller's id that fails to go in is released, so the caller may retry with it.
  const auto release = [&]() -> asio::awaitable<void> {
    if (caller_id) co_await conn_.command("ZREM", ids_key, e.message_id);
  };

  // The user's message enters the history before the bot can answer it. A generated id
  // is recorded too, so no caller can pick it later.
  redis::request cache;
  for (const auto& c : message_cache::store_commands(
           conn_, "redis", instance_id, cached_message{e.message_id, e.user_id, e.username, e.content, e.timestamp, false, e.reply_to}))
    cache.push_range(c);
  if (!caller_id) remember_id(cache, e.message_id);
  auto cached = co_await conn_.exec(std::move(cache));
  if (!cached) {
    co_await release();
    co_return cached.error();
  }

  // Quotas: checked after the history write, so a message held back is not lost; its id
  // is released so the caller may send it again later under the same id (the history
  // entry is keyed by it, so the retry rewrites the same entry).
  if (quotas_ != nullptr && quota_limits_.enabled()) {
    const quota_subject who{"redis", instance_id, e.user_id};
    auto decision = co_await quotas_->admit(quota_limits_, who, false);
    if (!decision) {
      co_await release();
      co_return decision.error();
    }
    if (!decision->admitted) {
      co_await release();
      inject_result held_back{inject_refusal::over_quota, e.message_id};
      held_back.quota = *decision;
      co_return held_back;
    }
  }

  if (!req.once_key.empty()) {
    // The marker is written by the script that appends the entry: a crash in between
    // cannot leave a message injected without its marker.
    auto published = co_await bus_.publish_inbound_once(e, req.once_key, req.once_ttl);
    if (!published) {
      co_await release();
      co_return published.error();
    }
    if (!published->first_message_id.empty())
      co_return inject_result{inject_refusal::none, published->first_message_id, true};
    co_return inject_result{inject_refusal::none, e.message_id};
  }
  auto published = co_await bus_.publish_inbound(e);
  if (!published) {
    co_await release();
    co_return published.error();
  }
  co_return inject_result{inject_refusal::none, e.message_id};
}

task<result<std::vector<cached_message>>> redis_platform::history(const std::string& instance_id, std::size_t limit,
                                                                  std::optional<double> before) {
  co_return co_await cache_.recent("redis", instance_id, limit, before);
}

task<result<std::optional<stored_file>>> redis_platform::get_file(const std::string& file_id) {
  auto r = co_await conn_.command("HMGET", file_key(file_id), "data", "filename", "mimetype", "channel_id");
  if (!r) co_return r.error();
  auto& f = r->elements();
  if (f.size() != 4 || f[0].is_nil()) co_return std::optional<stored_file>{};
  co_return std::optional<stored_file>(stored_file{f[0].str(), f[1].str(), f[2].str(), f[3].str()});
}

// ---- REST API state --------------------------------------------------------------------

std::string redis_platform::new_response_nonce() { return bus::random_hex_id(); }

std::string redis_platform::idempotency_prefix(const std::string& instance_id) {
  return "redis_platform:idem:" + instance_id + ":";
}

std::string redis_platform::idempotency_key(const std::string& instance_id, std::string_view client_key) {
  return idempotency_prefix(instance_id) + sha256_hex(client_key);
}

task<result<idempotency_claim>> redis_platform::claim_idempotency_key(const std::string& key,
                                                                       std::chrono::seconds pending_ttl) {
  auto claimed = co_await conn_.command("SET", key, "pending", "NX", "EX", pending_ttl.count());
  if (!claimed) co_return claimed.error();
  if (!claimed->is_nil()) co_return idempotency_claim{};
  auto stored = co_await conn_.command("GET", key);
  if (!stored) co_return stored.error();
  const auto& v = stored->str();
  const auto newline = v.find('\n');
  if (v == "pending" || newline == std::string::npos)
    co_return idempotency_claim{.what = idempotency_claim::state::in_progress};
  co_return idempotency_claim{.what = idempotency_claim::state::replay,
                              .status = static_cast<unsigned>(std::atoi(v.substr(0, newline).c_str())),
                              .body = v.substr(newline + 1)};
}

task<void> redis_platform::finish_idempotency_key(const std::string& key, unsigned status, const std::string& body,
                                                  std::chrono::seconds ttl) {
  if (status < 300) co_await conn_.command("SET", key, std::to_string(status) + "\n" + body, "EX", ttl.count());
  else co_await conn_.command("DEL", key);
}

task<result<std::string>> redis_platform::newest_event_id(const std::string& instance_id) {
  auto newest = co_await conn_.command("XREVRANGE", events_stream(instance_id), "+", "-", "COUNT", 1);
  if (!newest) co_return newest.error();
  co_return newest->elements().empty() ? std::string("0-0") : newest->elements()[0].elements()[0].str();
}

task<result<std::vector<platform_event>>> redis_platform::events_after(const std::string& instance_id,
                                                                       const std::string& last_id, std::size_t count) {
  auto r = co_await conn_.command("XRANGE", events_stream(instance_id), "(" + last_id, "+", "COUNT", count);
  if (!r) co_return r.error();
  std::vector<platform_event> events;
  for (auto& e : r->elements()) {
    // An entry's field values are its events in order (`event`, then `turn_complete` when
    // the send ended its turn); the last carries the entry's id.
    const auto& fields = e.elements()[1].elements();
    if (fields.size() < 2) events.push_back({{}, "{}"});
    for (std::size_t i = 1; i < fields.size(); i += 2) events.push_back({{}, fields[i].str()});
    events.back().id = e.elements()[0].str();
  }
  co_return events;
}

// ---- sending ---------------------------------------------------------------------------

task<result<std::string>> redis_platform::emit(const std::string& instance_id, const std::string& json_event) {
  redis::request req;
  req.push("MULTI");
  req.push("PUBLISH", response_channel(instance_id), json_event);
  const auto stream = events_stream(instance_id);
  req.push("XADD", stream, "MAXLEN", "~", events_maxlen, "*", "event", json_event);
  // The instance owns the stream (deleting it deletes the stream); the TTL is for the
  // instance that goes quiet, refreshed once per memo interval.
  if (conn_.expiries().due(stream)) req.push("EXPIRE", stream, message_ttl.count());
  req.push("EXEC");
  auto r = co_await conn_.exec(std::move(req));
  if (!r) co_return r.error();
  if (!r->back().is_array()) co_return make_error_code(errc::redis_error);
  co_return std::string();
}

std::vector<std::string> redis_platform::emit_args(const std::string& instance_id, std::string json_event,
                                                  const send_context& ctx) {
  const auto stream = events_stream(instance_id);
  const bool last_of_turn = ctx.completes_turn && !ctx.response_nonce.empty();
  const bool marks = bus::mark_wanted(ctx.order_mark);
  return {response_channel(instance_id), std::to_string(events_maxlen),
          conn_.expiries().due(stream) ? std::to_string(message_ttl.count()) : "0", std::move(json_event),
          last_of_turn ? turn_complete_event(ctx.response_nonce, now_unix()) : std::string(),
          marks ? std::to_string(ctx.order_mark->seq) : "0"};
}

task<result<std::string>> redis_platform::run_send(const redis::script& script, std::vector<std::string> keys,
                                                   std::vector<std::string> args, std::string id,
                                                   const send_context& ctx) {
  const bool marks = bus::mark_wanted(ctx.order_mark);
  keys.push_back(marks ? ctx.order_mark->key : std::string());
  auto r = co_await conn_.eval(script, keys, args);
  if (!r) co_return r.error();
  if (!r->is_bulk()) co_return make_error_code(errc::redis_error);
  if (marks) ctx.order_mark->written = true;
  // Delivered before (a redelivered entry): the id it was delivered as.
  if (!r->str().empty()) id = r->str();
  co_return id;
}

task<result<std::string>> redis_platform::send(const std::string& channel_id, const std::string& text,
                                               const send_context& ctx) {
  const auto id = bus::random_hex_id();
  const auto ts = now_unix();
  std::string event = fmt::format(R"({{"type":"message","id":{},"text":{},"timestamp":{})", json::quoted(id),
                                  json::quoted(text), json::quoted(iso_time(ts)));
  if (!ctx.response_nonce.empty()) event += ",\"nonce\":" + json::quoted(ctx.response_nonce);
  event += "}";
  // The bot's message enters the history; its hash is the message key when there is one.
  const auto me = identity();
  auto stored = message_cache::prepare_store(
      conn_, "redis", channel_id, cached_message{id, me.user_id, me.display_name, text, ts, true, {}}, ctx.message_key);
  auto args = emit_args(channel_id, std::move(event), ctx);
  args.insert(args.end(), std::make_move_iterator(stored.args.begin()), std::make_move_iterator(stored.args.end()));
  std::vector<std::string> keys{std::move(stored.keys[0]), std::move(stored.keys[1]), events_stream(channel_id)};
  co_return co_await run_send(send_script(), std::move(keys), std::move(args), id, ctx);
}

task<result<std::string>> redis_platform::send_with_buttons(const std::string& channel_id, const std::string& text,
                                                            const std::vector<bus::button>& buttons,
                                                            const send_context& ctx) {
  // No buttons on this platform: their labels are appended to the text.
  std::string body = text;
  for (const auto& b : buttons) body += "\n[" + b.label + "]";
  co_return co_await send(channel_id, body, ctx);
}

task<result<std::string>> redis_platform::send_file(const std::string& channel_id, const std::string& data,
                                                    const std::string& filename, const std::string& mimetype,
                                                    const send_context& ctx) {
  const auto file_id = bus::random_hex_id();  // 128 random bits: the URL is the capability
  const auto ts = now_unix();
  const auto url = "/redis-platform/files/" + file_id + "/" + filename;
  std::string event =
      fmt::format(R"({{"type":"file","id":{},"filename":{},"mimetype":{},"size":{},"url":{},"timestamp":{})",
                  json::quoted(file_id), json::quoted(filename), json::quoted(mimetype), data.size(), json::quoted(url),
                  json::quoted(iso_time(ts)));
  if (!ctx.response_nonce.empty()) event += ",\"nonce\":" + json::quoted(ctx.response_nonce);
  event += "}";
  auto args = emit_args(channel_id, std::move(event), ctx);
  for (std::string a : {std::to_string(file_ttl.count()), std::to_string(message_ttl.count()), file_id,
                        std::string("data"), data, std::string("filename"), filename, std::string("mimetype"), mimetype,
                        std::string("size"), std::to_string(data.size()), std::string("timestamp"),
                        fmt::format("{:.3f}", ts), std::string("channel_id"), channel_id})
    args.push_back(std::move(a));
  // The delivery marker in the same script as the event: a gateway killed right after it
  // cannot post the file again.
  std::vector<std::string> keys{file_key(file_id), events_stream(channel_id), ctx.message_key};
  co_return co_await run_send(send_file_script(), std::move(keys), std::move(args), file_id, ctx);
}

task<void> redis_platform::turn_complete(const std::string& channel_id, const std::string& response_nonce) {
  auto r = co_await emit(channel_id, turn_complete_event(response_nonce, now_unix()));
  if (!r) throw std::system_error(r.error(), "turn_complete for " + channel_id);
}

}  // namespace stargazer::platform
