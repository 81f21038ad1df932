#include "stargazer/platform/discord/discord_platform.hpp"

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/lease.hpp"
#include "stargazer/bus/lock.hpp"
#include "stargazer/core/digest.hpp"
#include "stargazer/core/error.hpp"
#include "stargazer/core/json.hpp"
#include "stargazer/core/json_value.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/core/spawn.hpp"
#include "stargazer/core/strings.hpp"
#include "stargazer/platform/discord/gateway.hpp"
#include "stargazer/platform/discord/message_split.hpp"
#include "stargazer/platform/discord/rest.hpp"
#include "stargazer/platform/message_cache.hpp"
#include "stargazer/redis/connection.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <ctime>
#include <map>
#include <set>

namespace stargazer::platform::discord {

namespace asio = boost::asio;
using std::chrono::milliseconds;

// Requests are named values before `co_await rest.send(...)`: GCC 12 destroys a temporary
// (or an initializer list) in a co_await expression twice.

// ---- pure helpers ----------------------------------------------------------------------

std::string message_nonce(std::string_view message_key, std::size_t part) {
  return sha256_hex(std::string(message_key) + "#" + std::to_string(part)).substr(0, 25);
}

double parse_timestamp(std::string_view iso) {
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (iso.size() < 19 ||
      std::sscanf(std::string(iso.substr(0, 19)).c_str(), "%4d-%2d-%2dT%2d:%2d:%2d", &year, &month, &day, &hour,
                  &minute, &second) != 6)
    return 0;
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  double seconds = static_cast<double>(timegm(&tm));
  if (iso.size() > 20 && iso[19] == '.') {
    double fraction = 0, scale = 0.1;
    for (std::size_t i = 20; i < iso.size() && std::isdigit(static_cast<unsigned char>(iso[i])); ++i, scale /= 10)
      fraction += (iso[i] - '0') * scale;
    seconds += fraction;
  }
  return seconds;  // Discord's timestamps are UTC (+00:00)
}

std::string reaction_path_segment(std::string_view emoji) {
  const auto colon = emoji.find(':');
  if (colon == std::string_view::npos) return percent_encode(emoji);
  return percent_encode(emoji.substr(0, colon)) + ":" + percent_encode(emoji.substr(colon + 1));  // name:id
}

// ---- the platform ------------------------------------------------------------------------

namespace {

const rapidjson::Value* obj(const rapidjson::Value& v, const char* name) {
  if (!v.IsObject()) return nullptr;
  const auto it = v.FindMember(name);
  return it != v.MemberEnd() && it->value.IsObject() ? &it->value : nullptr;
}

const rapidjson::Value* arr(const rapidjson::Value& v, const char* name) {
  if (!v.IsObject()) return nullptr;
  const auto it = v.FindMember(name);
  return it != v.MemberEnd() && it->value.IsArray() ? &it->value : nullptr;
}

// The live gateway processes: a sorted set of node id → last seen (ms), pruned as it is read.
const redis::script nodes_script(R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
)lua");

// One session start of the day's budget (session_start_limit, as GET /gateway/bot last
// said): 0 when one may identify (and it is counted), else the wait until the budget resets.
const redis::script session_start_script(R"lua(
local left = redis.call('GET', KEYS[1])
if not left then return 0 end
if tonumber(left) <= 0 then return math.max(1, redis.call('PTTL', KEYS[1])) end
redis.call('DECR', KEYS[1])
return 0
)lua");

const log::logger& discord_log() {
  static const log::logger instance("discord");
  return instance;
}

}  // namespace

struct discord_platform::impl : std::enable_shared_from_this<impl> {
  impl(redis::connection& r, bus::event_bus& b, discord_settings s, metrics::registry* m)
      : redis(r),
        bus(b),
        settings(std::move(s)),
        rest(r.get_executor(), r,
             rest_settings{.api_url = settings.api_url,
                           .token = settings.token,
                           .global_per_second = settings.global_requests_per_second,
                           .key_prefix = settings.key_prefix + ":rl"},
             m),
        timer(r.get_executor()) {
    if (m != nullptr) {
      inbound_counter = &m->make_counter("stargazer_discord_events_published_total",
                                         "Discord messages, reactions and clicks published on the bus");
      duplicate_counter = &m->make_counter("stargazer_discord_events_duplicate_total",
                                           "Discord events not published again (replayed after a resume)");
    }
  }

  redis::connection& redis;
  bus::event_bus& bus;
  discord_settings settings;
  rest_client rest;
  asio::steady_timer timer;
  metrics::counter* inbound_counter = nullptr;
  metrics::counter* duplicate_counter = nullptr;

  bool running = false;
  std::string gateway_url;
  int shard_count = 1;
  int max_concurrency = 1;
  std::string bot_user_id;
  std::string last_error;
  std::map<int, std::unique_ptr<shard>> shards;  // held by this process
  std::optional<std::string> fatal;
  std::map<std::string, std::shared_ptr<asio::steady_timer>> typing;  // channel → its repeat timer

  // Who may use the worker's privileged commands in a guild: its owner and members with a
  // role granting Administrator or Manage Server. Kept in Redis too (a shard taken over by
  // resuming gets no GUILD_CREATE again); memoised here.
  struct guild_admins {
    std::string owner_id;
    std::set<std::string> role_ids;
  };
  std::map<std::string, guild_admins> admins;

  std::string key(std::string_view rest_of_key) const { return settings.key_prefix + ":" + std::string(rest_of_key); }
  std::string lease_key(int id) const { return key(fmt::format("shard:{}:owner", id)); }
  std::string session_key(int id) const { return key(fmt::format("shard:{}:session", id)); }

  // ---- start: the gateway's parameters, then the shard manager ----

  asio::awaitable<bool> read_gateway() {
    rest_request gateway_bot{.verb = http::method::get, .path = "/gateway/bot", .route = "GET /gateway/bot"};
    auto r = co_await rest.send(std::move(gateway_bot));
    if (!r) {
      last_error = "GET /gateway/bot failed: " + r.error().message();
      co_return false;
    }
    if (r->status == 401) {
      fatal = "the Discord token was refused (401): check --discord-token";
      discord_log().error("{}", *fatal);
      co_return false;
    }
    auto parsed = json::parse_object(r->body);
    auto* doc = std::get_if<rapidjson::Document>(&parsed);
    if (r->status != 200 || doc == nullptr) {
      last_error = fmt::format("GET /gateway/bot answered {}", r->status);
      co_return false;
    }
    // Who the bot is: its own messages are ignored, mentions of it address it. (READY says so
    // too, but a shard taken over from another process resumes without a READY.)
    rest_request whoami{.verb = http::method::get, .path = "/users/@me", .route = "GET /users/@me"};
    auto me = co_await rest.send(std::move(whoami));
    if (me && me->status == 200) {
      auto user = json::parse_object(me->body);
      if (auto* u = std::get_if<rapidjson::Document>(&user)) {
        bot_user_id = json::string_member(*u, "id");
      }
    }
    if (bot_user_id.empty()) {
      last_error = "GET /users/@me failed";
      co_return false;
    }
    gateway_url = settings.gateway_url.empty() ? json::string_member(*doc, "url") : settings.gateway_url;
    const int recommended = doc->HasMember("shards") && (*doc)["shards"].IsInt() ? (*doc)["shards"].GetInt() : 1;
    shard_count = settings.shards > 0 ? settings.shards : std::max(1, recommended);
    if (const auto* limit = obj(*doc, "session_start_limit")) {
      if (limit->HasMember("max_concurrency") && (*limit)["max_concurrency"].IsInt())
        max_concurrency = std::max(1, (*limit)["max_concurrency"].GetInt());
      if (limit->HasMember("remaining") && (*limit)["remaining"].IsInt() && limit->HasMember("reset_after") &&
          (*limit)["reset_after"].IsNumber()) {
        const auto remaining = (*limit)["remaining"].GetInt();
        const auto reset_after = std::max<std::int64_t>(1, static_cast<std::int64_t>((*limit)["reset_after"].GetDouble()));
        const auto budget_key = key("session_starts");
        co_await redis.command("SET", budget_key, std::to_string(remaining), "PX", std::to_string(reset_after));
        if (remaining == 0) discord_log().warn("no session starts left (session_start_limit): shards can only resume");
      }
    }
    discord_log().info("gateway {}, {} shard(s), max_concurrency {}", gateway_url, shard_count, max_concurrency);
    co_return !gateway_url.empty();
  }

  asio::awaitable<void> manage() {
    auto self = shared_from_this();
    const auto interval = settings.lease_ttl / 3;
    while (running && !fatal) {
      if (gateway_url.empty() && !co_await read_gateway()) {
        if (!fatal) discord_log().warn("{}; retrying", last_error);
      } else {
        co_await balance();
      }
      timer.expires_after(gateway_url.empty() ? std::chrono::milliseconds(2000) : interval);
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  // Renews the leases held, gives up shards over this process's share, takes free ones up to it.
  asio::awaitable<void> balance() {
    const std::vector<std::string> node_keys{key("nodes")};
    const std::vector<std::string> node_args{settings.node_id, std::to_string(settings.lease_ttl.count())};
    auto nodes = co_await redis.eval(nodes_script, node_keys, node_args);
    const long live = nodes && !nodes->is_error() ? std::max(1LL, nodes->to_integer().value_or(1)) : 1;
    const auto share = static_cast<std::size_t>((shard_count + live - 1) / live);
    for (auto it = shards.begin(); it != shards.end();) {
      auto r = co_await bus::take_or_renew_lease(redis, lease_key(it->first), settings.node_id, settings.lease_ttl);
      // Held, or Redis unreachable: keep the shard while the lease may still be ours.
      if (!r || *r) {
        ++it;
        continue;
      }
      discord_log().warn("lost the lease of shard {}; stopping it", it->first);
      it->second->stop();
      it = shards.erase(it);
    }
    if (shards.size() > share) {
      // More than this process's share: hand one back (its session stays resumable).
      auto last = std::prev(shards.end());
      discord_log().info("handing shard {} over ({} live gateway processes)", last->first, live);
      co_await release(last->first, *last->second);
      shards.erase(last);
      co_return;
    }
    for (int id = 0; id < shard_count && shards.size() < share && running; ++id) {
      if (shards.contains(id)) continue;
      auto r = co_await bus::take_or_renew_lease(redis, lease_key(id), settings.node_id, settings.lease_ttl);
      if (!r || !*r) continue;
      co_await start_shard(id);
    }
  }

  asio::awaitable<void> release(int id, shard& s) {
    s.stop();
    co_await save_session(id, s.session());
    co_await bus::release_lease(redis, lease_key(id), settings.node_id);
  }

  asio::awaitable<void> save_session(int id, const session_state& st) {
    if (st.session_id.empty()) co_return;
    co_await redis.command("HSET", session_key(id), "session_id", st.session_id, "seq", std::to_string(st.seq),
                           "resume_url", st.resume_url);
  }

  asio::awaitable<void> start_shard(int id) {
    session_state initial;
    auto stored = co_await redis.command("HMGET", session_key(id), "session_id", "seq", "resume_url");
    if (stored && stored->is_array() && stored->elements().size() == 3 && stored->elements()[0].is_bulk()) {
      initial.session_id = stored->elements()[0].str();
      initial.seq = stored->elements()[1].to_integer().value_or(0);
      initial.resume_url = stored->elements()[2].str();
    }
    discord_log().info("holding shard {}/{}{}", id, shard_count,
                       initial.resumable() ? fmt::format(" (resuming at sequence {})", initial.seq) : std::string());
    shard_settings ss;
    ss.token = settings.token;
    ss.intents = settings.intents;
    ss.shard_id = id;
    ss.shard_count = shard_count;
    ss.gateway_url = gateway_url;
    ss.compress = settings.compress;
    ss.backoff_min = settings.backoff_min;
    auto weak = weak_from_this();
    shard_callbacks cb;
    cb.on_dispatch = [weak, id](const std::string& type, const std::string& data,
                                const session_state& st) -> asio::awaitable<void> {
      if (auto self = weak.lock()) co_await self->on_dispatch(id, type, data, st);
    };
    cb.on_ready = [weak, id](const session_state& st, const std::string& user_id) -> asio::awaitable<void> {
      auto self = weak.lock();
      if (!self) co_return;
      if (!user_id.empty()) self->bot_user_id = user_id;
      co_await self->save_session(id, st);
    };
    cb.may_identify = [weak, id]() -> asio::awaitable<bool> {
      auto self = weak.lock();
      if (!self) co_return false;
      co_return co_await self->may_identify(id);
    };
    cb.on_fatal = [weak](const std::string& reason) {
      if (auto self = weak.lock()) self->fatal = reason;
    };
    auto s = std::make_unique<shard>(redis.get_executor(), std::move(ss), initial, std::move(cb));
    s->start();
    shards.emplace(id, std::move(s));
  }

  // At most max_concurrency identifies per 5 s across every process of this bot, and never
  // more than the day's session starts allow.
  asio::awaitable<bool> may_identify(int id) {
    const std::vector<std::string> budget_keys{key("session_starts")};
    const std::vector<std::string> no_args;
    auto budget = co_await redis.eval(session_start_script, budget_keys, no_args);
    if (budget && !budget->is_error() && budget->to_integer().value_or(0) > 0) {
      discord_log().error("shard {}: no session starts left; Discord resets the budget in {} s", id,
                          budget->to_integer().value_or(0) / 1000);
      co_return false;
    }
    const auto slot = key(fmt::format("identify:{}", id % max_concurrency));
    asio::steady_timer wait(redis.get_executor());
    for (int attempt = 0; attempt < 30 && running; ++attempt) {
      auto r = co_await redis.command("SET", slot, settings.node_id, "NX", "PX", "5000");
      if (r && !r->is_nil() && !r->is_error()) co_return true;
      wait.expires_after(milliseconds(250));
      boost::system::error_code ec;
      co_await wait.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    co_return false;
  }

  // ---- inbound ----

  asio::awaitable<void> on_dispatch(int id, const std::string& type, const std::string& data,
                                    const session_state& st) {
    auto parsed = json::parse_object(data, 64);
    if (auto* doc = std::get_if<rapidjson::Document>(&parsed)) {
      try {
        if (type == "MESSAGE_CREATE") co_await on_message(*doc);
        else if (type == "MESSAGE_REACTION_ADD") co_await on_reaction(*doc);
        else if (type == "INTERACTION_CREATE") co_await on_interaction(*doc);
        else if (type == "GUILD_CREATE") co_await on_guild(*doc);
        else if (type == "GUILD_UPDATE") co_await on_guild_roles(*doc);
        else if (type.rfind("GUILD_ROLE_", 0) == 0) co_await on_role_change(type, *doc);
        else if (type == "GUILD_DELETE") co_await on_guild_gone(*doc);
        else if (type == "CHANNEL_CREATE" || type == "CHANNEL_UPDATE" || type == "THREAD_CREATE") {
          const auto channel_id = json::string_member(*doc, "id");
          const auto guild_id = json::string_member(*doc, "guild_id");
          co_await remember_channel(channel_id, guild_id);
        } else if (type == "CHANNEL_DELETE" || type == "THREAD_DELETE") {
          const auto channel_id = json::string_member(*doc, "id");
          co_await redis.command("SREM", key("channels"), channel_id);
        }
      } catch (const std::exception& e) {
        discord_log().warn("{} not handled: {}", type, e.what());
      }
    } else {
      discord_log().warn("{} with a body that is not a JSON object: {}", type, std::get<std::string>(parsed));
    }
    co_await save_session(id, st);  // after the event is on the bus: a takeover resumes past it
  }

  asio::awaitable<void> remember_channel(const std::string& channel_id, const std::string& guild_id) {
    if (channel_id.empty()) co_return;
    redis::request req;
    req.push("SADD", key("channels"), channel_id);
    if (!guild_id.empty()) req.push("SADD", key("guild:" + guild_id + ":channels"), channel_id);
    co_await redis.exec(std::move(req));
  }

  static bool grants_admin(const rapidjson::Value& role) {
    constexpr std::uint64_t administrator = 1ULL << 3, manage_guild = 1ULL << 5;
    try {
      return (std::stoull(json::string_member(role, "permissions")) & (administrator | manage_guild)) != 0;
    } catch (const std::exception&) {
      return false;  // absent or not a number
    }
  }

  std::string admins_key(const std::string& guild_id) const { return key("guild:" + guild_id + ":admins"); }

  asio::awaitable<void> save_admins(const std::string& guild_id) {
    const auto& a = admins[guild_id];
    std::string roles;
    for (const auto& r : a.role_ids) roles += (roles.empty() ? "" : ",") + r;
    co_await redis.command("HSET", admins_key(guild_id), "owner", a.owner_id, "roles", roles);
  }

  // GUILD_CREATE and GUILD_UPDATE carry the owner and every role.
  asio::awaitable<void> on_guild_roles(const rapidjson::Value& d) {
    const auto guild_id = json::string_member(d, "id");
    if (guild_id.empty()) co_return;
    guild_admins a;
    a.owner_id = json::string_member(d, "owner_id");
    if (const auto* roles = arr(d, "roles"))
      for (const auto& r : roles->GetArray())
        if (grants_admin(r)) a.role_ids.insert(json::string_member(r, "id"));
    admins[guild_id] = std::move(a);
    co_await save_admins(guild_id);
  }

  // GUILD_ROLE_CREATE, _UPDATE, _DELETE.
  asio::awaitable<void> on_role_change(const std::string& type, const rapidjson::Value& d) {
    const auto guild_id = json::string_member(d, "guild_id");
    if (guild_id.empty()) co_return;
    auto* a = co_await admins_of(guild_id);
    if (type == "GUILD_ROLE_DELETE") {
      a->role_ids.erase(json::string_member(d, "role_id"));
    } else if (const auto* role = obj(d, "role")) {
      const auto role_id = json::string_member(*role, "id");
      if (grants_admin(*role)) a->role_ids.insert(role_id);
      else a->role_ids.erase(role_id);
    }
    co_await save_admins(guild_id);
  }

  asio::awaitable<guild_admins*> admins_of(const std::string& guild_id) {
    if (auto it = admins.find(guild_id); it != admins.end()) co_return &it->second;
    guild_admins a;
    auto stored = co_await redis.command("HGETALL", admins_key(guild_id));
    if (stored && stored->is_array()) {
      const auto& fields = stored->elements();
      for (std::size_t i = 0; i + 1 < fields.size(); i += 2) {
        const auto value = fields[i + 1].str();
        if (fields[i].str() == "owner") a.owner_id = value;
        if (fields[i].str() == "roles")
          for (std::size_t start = 0; start < value.size();) {
            const auto comma = std::min(value.find(',', start), value.size());
            a.role_ids.insert(value.substr(start, comma - start));
            start = comma + 1;
          }
      }
    }
    auto& memo = admins[guild_id] = std::move(a);
    co_return &memo;
  }

  asio::awaitable<void> on_guild(const rapidjson::Value& d) {
    const auto guild_id = json::string_member(d, "id");
    co_await on_guild_roles(d);
    redis::request req;
    std::size_t n = 0;
    for (const char* field : {"channels", "threads"})
      if (const auto* list = arr(d, field))
        for (const auto& c : list->GetArray())
          if (auto cid = json::string_member(c, "id"); !cid.empty()) {
            req.push("SADD", key("channels"), cid);
            req.push("SADD", key("guild:" + guild_id + ":channels"), cid);
            ++n;
          }
    if (n > 0) co_await redis.exec(std::move(req));
  }

  asio::awaitable<void> on_guild_gone(const rapidjson::Value& d) {
    // An outage (unavailable: true) keeps the channels; a removal forgets them.
    if (d.HasMember("unavailable") && d["unavailable"].IsBool() && d["unavailable"].GetBool()) co_return;
    const auto set = key("guild:" + json::string_member(d, "id") + ":channels");
    auto members = co_await redis.command("SMEMBERS", set);
    redis::request req;
    if (members && members->is_array())
      for (const auto& m : members->elements()) req.push("SREM", key("channels"), m.str());
    req.push("DEL", set);
    co_await redis.exec(std::move(req));
  }

  static std::string display_name(const rapidjson::Value& user) {
    auto name = json::string_member(user, "global_name");
    return name.empty() ? json::string_member(user, "username") : name;
  }

  asio::awaitable<void> publish(bus::inbound_envelope e, const std::string& dedupe) {
    auto r = co_await bus.publish_inbound_once(e, key("seen:" + dedupe), std::chrono::hours(24));
    if (!r) throw std::runtime_error("publishing failed: " + r.error().message());
    if (r->entry_id.empty()) {
      if (duplicate_counter != nullptr) duplicate_counter->inc();
      co_return;
    }
    if (inbound_counter != nullptr) inbound_counter->inc();
    // The worker's replies name the entry in their message key; this finds the message to reply to.
    if (!e.message_id.empty())
      co_await redis.command("SET", key("entry:" + r->entry_id), e.message_id, "EX", "86400");
  }

  asio::awaitable<void> on_message(const rapidjson::Value& d) {
    const auto* author = obj(d, "author");
    if (author == nullptr) co_return;
    const auto author_id = json::string_member(*author, "id");
    const bool author_is_bot = author->HasMember("bot") && (*author)["bot"].IsBool() && (*author)["bot"].GetBool();
    if (author_id == bot_user_id) co_return;              // the bot's own message
    if (author_is_bot && !settings.allow_bots) co_return;  // another bot
    bus::inbound_envelope e;
    e.platform = "discord";
    e.channel_id = json::string_member(d, "channel_id");
    e.message_id = json::string_member(d, "id");
    e.user_id = author_id;
    e.username = display_name(*author);
    e.content = json::string_member(d, "content");
    e.timestamp = parse_timestamp(json::string_member(d, "timestamp"));
    const auto guild_id = json::string_member(d, "guild_id");
    e.is_dm = guild_id.empty();
    if (!guild_id.empty()) e.guild_id = guild_id;
    if (const auto* member = obj(d, "member"))
      if (const auto* roles = arr(*member, "roles"))
        for (const auto& r : roles->GetArray())
          if (r.IsString()) e.member_roles.emplace_back(r.GetString(), r.GetStringLength());
    if (!guild_id.empty()) {
      // The worker's privileged commands know one marker for "a platform admin".
      const auto* a = co_await admins_of(guild_id);
      const bool admin = author_id == a->owner_id ||
                         std::any_of(e.member_roles.begin(), e.member_roles.end(),
                                     [&](const std::string& r) { return a->role_ids.count(r) > 0; });
      if (admin) e.member_roles.emplace_back(bus::platform_admin_role);
    }
    bool mentioned = false;
    if (const auto* mentions = arr(d, "mentions"))
      for (const auto& m : mentions->GetArray()) mentioned = mentioned || json::string_member(m, "id") == bot_user_id;
    bool reply_to_bot = false;
    if (const auto* ref = obj(d, "referenced_message")) {
      e.reply_to = json::string_member(*ref, "id");
      if (const auto* ref_author = obj(*ref, "author")) reply_to_bot = json::string_member(*ref_author, "id") == bot_user_id;
    } else if (const auto* reference = obj(d, "message_reference")) {
      e.reply_to = json::string_member(*reference, "message_id");
    }
    e.is_addressed = e.is_dm || mentioned || reply_to_bot || stargazer::names_as_word(e.content, settings.bot_name);
    if (const auto* attachments = arr(d, "attachments"))
      for (const auto& a : attachments->GetArray())
        e.attachments.push_back(bus::attachment{.data = {}, .mimetype = json::string_member(a, "content_type"),
                                                .filename = json::string_member(a, "filename"), .source_url = json::string_member(a, "url")});
    e.trace_id = bus::random_hex_id().substr(0, 16);
    if (e.is_dm) {
      const std::string no_guild;
      co_await remember_channel(e.channel_id, no_guild);
    }
    co_await publish(std::move(e), "message:" + json::string_member(d, "id"));
  }

  asio::awaitable<void> on_reaction(const rapidjson::Value& d) {
    const auto user_id = json::string_member(d, "user_id");
    if (user_id.empty() || user_id == bot_user_id) co_return;
    const auto* emoji = obj(d, "emoji");
    const auto emoji_name = emoji != nullptr ? json::string_member(*emoji, "name") : std::string();
    const auto emoji_id = emoji != nullptr ? json::string_member(*emoji, "id") : std::string();
    const auto shown = emoji_id.empty() ? emoji_name : emoji_name + ":" + emoji_id;
    bus::inbound_envelope e;
    e.platform = "discord";
    e.channel_id = json::string_member(d, "channel_id");
    e.user_id = user_id;
    if (const auto* member = obj(d, "member"))
      if (const auto* user = obj(*member, "user")) e.username = display_name(*user);
    e.reply_to = json::string_member(d, "message_id");
    e.reactions = shown;
    e.content = fmt::format("[reaction {} to message {}]", shown, e.reply_to);
    e.is_addressed = false;  // context: the worker's reply policy decides
    const auto guild_id = json::string_member(d, "guild_id");
    e.is_dm = guild_id.empty();
    if (!guild_id.empty()) e.guild_id = guild_id;
    e.trace_id = bus::random_hex_id().substr(0, 16);
    auto dedupe = fmt::format("reaction:{}:{}:{}", e.reply_to, user_id, shown);
    co_await publish(std::move(e), dedupe);
  }

  asio::awaitable<void> on_interaction(const rapidjson::Value& d) {
    if (!d.HasMember("type") || !d["type"].IsInt() || d["type"].GetInt() != 3) co_return;  // components only
    const auto id = json::string_member(d, "id");
    const auto token = json::string_member(d, "token");
    // Acknowledge first: Discord allows 3 s. A deferred update shows no "thinking" state.
    rest_request acknowledge{.verb = http::method::post,
                                   .path = fmt::format("/interactions/{}/{}/callback", id, token),
                                   .route = "POST /interactions/{id}/{token}/callback",
                                   .major = id,
                                   .body = R"({"type":6})"};
    auto ack = co_await rest.send(std::move(acknowledge));
    if (!ack || ack->status >= 300)
      discord_log().warn("interaction {} not acknowledged: {}", id,
                         ack ? fmt::format("HTTP {}", ack->status) : ack.error().message());
    const auto* data = obj(d, "data");
    const rapidjson::Value* user = obj(d, "user");
    const rapidjson::Value* member = obj(d, "member");
    if (user == nullptr && member != nullptr) user = obj(*member, "user");
    bus::inbound_envelope e;
    e.platform = "discord";
    e.channel_id = json::string_member(d, "channel_id");
    e.message_id = id;
    if (user != nullptr) {
      e.user_id = json::string_member(*user, "id");
      e.username = display_name(*user);
    }
    e.content = data != nullptr ? json::string_member(*data, "custom_id") : std::string();
    if (const auto* message = obj(d, "message")) e.reply_to = json::string_member(*message, "id");
    e.extra["interaction"] = "button";
    const auto guild_id = json::string_member(d, "guild_id");
    e.is_dm = guild_id.empty();
    if (!guild_id.empty()) e.guild_id = guild_id;
    e.is_addressed = true;  // a click on the bot's own buttons
    e.trace_id = bus::random_hex_id().substr(0, 16);
    co_await publish(std::move(e), "interaction:" + id);
  }

  // ---- outbound ----

  // The user's message a turn answers: the inbound entry named in the message key
  // ("sg:msg:{platform}:{channel}:{entry}:{n}", docs/protocol.md §4.5), first send only.
  asio::awaitable<std::string> reply_target(const std::string& message_key) {
    const auto last = message_key.rfind(':');
    if (last == std::string::npos || message_key.substr(last + 1) != "0") co_return std::string();
    const auto prev = message_key.rfind(':', last - 1);
    if (prev == std::string::npos) co_return std::string();
    const auto entry_key = key("entry:" + message_key.substr(prev + 1, last - prev - 1));
    auto r = co_await redis.command("GET", entry_key);
    co_return r && r->is_bulk() ? r->str() : std::string();
  }

  static std::string allowed_mentions() { return R"({"parse":["users"],"replied_user":true})"; }

  asio::awaitable<result<std::string>> create_message(const std::string& channel_id, std::string body,
                                                      std::string content_type = "application/json") {
    rest_request create{.verb = http::method::post,
                                 .path = "/channels/" + channel_id + "/messages",
                                 .route = "POST /channels/{channel_id}/messages",
                                 .major = channel_id,
                                 .body = std::move(body),
                                 .content_type = std::move(content_type)};
    auto r = co_await rest.send(std::move(create));
    if (!r) co_return r.error();
    if (r->status != 200) {
      discord_log().warn("message to {} refused: HTTP {} {}", channel_id, r->status, r->body.substr(0, 300));
      co_return make_error_code(r->status == 404 || r->status == 403 ? errc::invalid_argument : errc::unexpected_reply);
    }
    auto parsed = json::parse_object(r->body);
    auto* doc = std::get_if<rapidjson::Document>(&parsed);
    if (doc == nullptr) co_return make_error_code(errc::unexpected_reply);
    co_return json::string_member(*doc, "id");
  }

  asio::awaitable<result<std::string>> send_text(const std::string& channel_id, const std::string& text,
                                                 const send_context& ctx) {
    const auto parts = split_message(text.empty() ? std::string("…") : text);
    std::string reply_to;
    if (!ctx.message_key.empty()) reply_to = co_await reply_target(ctx.message_key);
    std::string last_id;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      std::string body = fmt::format(R"({{"content":{},"allowed_mentions":{})", json::quoted(parts[i]), allowed_mentions());
      if (!ctx.message_key.empty())
        body += fmt::format(R"(,"nonce":{},"enforce_nonce":true)", json::quoted(message_nonce(ctx.message_key, i)));
      if (i == 0 && !reply_to.empty())
        body += fmt::format(R"(,"message_reference":{{"message_id":{},"fail_if_not_exists":false}})", json::quoted(reply_to));
      body += "}";
      auto sent = co_await create_message(channel_id, std::move(body));
      if (!sent) co_return sent.error();
      last_id = *sent;
    }
    co_return last_id;
  }

  // The bot's reply joins the channel's history the model reads next (Discord does not echo
  // the bot's own messages to it), under the message key as on the other platforms, so a
  // redelivered send stores it once.
  asio::awaitable<void> remember_reply(const std::string& channel_id, const std::string& message_id,
                                       const std::string& text, const send_context& ctx) {
    const auto now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    const cached_message reply{message_id, bot_user_id, settings.bot_name, text, now, true, {}};
    redis::request req;
    for (const auto& command : message_cache::store_commands(redis, "discord", channel_id, reply, ctx.message_key))
      req.push_range(command);
    auto stored = co_await redis.exec(std::move(req));
    if (!stored) discord_log().warn("reply in {} not kept for the history: {}", channel_id, stored.error().message());
  }

  asio::awaitable<void> typing_loop(std::string channel_id, std::shared_ptr<asio::steady_timer> t) {
    auto self = shared_from_this();
    const auto until = std::chrono::steady_clock::now() + std::chrono::minutes(2);  // a lost stop_typing ends here
    while (running && typing.contains(channel_id) && typing[channel_id] == t &&
           std::chrono::steady_clock::now() < until) {
      rest_request typing_request{.verb = http::method::post,
                          .path = "/channels/" + channel_id + "/typing",
                          .route = "POST /channels/{channel_id}/typing",
                          .major = channel_id};
      co_await rest.send(std::move(typing_request));
      t->expires_after(std::chrono::seconds(8));  // Discord shows typing for 10 s
      boost::system::error_code ec;
      co_await t->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (typing.contains(channel_id) && typing[channel_id] == t) typing.erase(channel_id);
  }
};

discord_platform::discord_platform(redis::connection& redis, bus::event_bus& bus, discord_settings settings,
                                   metrics::registry* metrics)
    : impl_(std::make_shared<impl>(redis, bus, std::move(settings), metrics)) {}

discord_platform::~discord_platform() {
  impl_->running = false;
  impl_->timer.cancel();
  for (auto& [id, s] : impl_->shards) s->stop();
}

readiness discord_platform::health() const {
  if (impl_->fatal) return {false, *impl_->fatal};
  if (impl_->gateway_url.empty()) return {false, impl_->last_error.empty() ? "reading the gateway" : impl_->last_error};
  return {true, fmt::format("{} of {} shard(s) here", impl_->shards.size(), impl_->shard_count)};
}

std::vector<int> discord_platform::owned_shards() const {
  std::vector<int> ids;
  for (const auto& [id, s] : impl_->shards) ids.push_back(id);
  return ids;
}

task<void> discord_platform::start() {
  impl_->running = true;
  // The first balance waits one interval: gateway processes started together see each other.
  const auto executor = co_await asio::this_coro::executor;
  spawn(executor, [self = impl_]() -> asio::awaitable<void> {
    asio::steady_timer settle(self->redis.get_executor(), self->settings.lease_ttl / 3);
    const std::vector<std::string> keys{self->key("nodes")};
    const std::vector<std::string> args{self->settings.node_id, std::to_string(self->settings.lease_ttl.count())};
    co_await self->redis.eval(nodes_script, keys, args);
    boost::system::error_code ec;
    co_await settle.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    co_await self->manage();
  }, "discord");
}

task<void> discord_platform::stop() {
  impl_->running = false;
  impl_->timer.cancel();
  for (auto& [id, t] : impl_->typing) t->cancel();
  auto held = std::move(impl_->shards);
  for (auto& [id, s] : held) co_await impl_->release(id, *s);
  co_await impl_->redis.command("ZREM", impl_->key("nodes"), impl_->settings.node_id);
}

bool discord_platform::is_running() const { return impl_->running; }

bot_identity discord_platform::identity() const { return {impl_->bot_user_id, impl_->settings.bot_name}; }

task<result<std::string>> discord_platform::send(const std::string& channel_id, const std::string& text,
                                                 const send_context& ctx) {
  auto self = impl_;
  auto sent = co_await self->send_text(channel_id, text, ctx);
  if (sent) co_await self->remember_reply(channel_id, *sent, text, ctx);
  co_return sent;
}

task<result<std::string>> discord_platform::send_file(const std::string& channel_id, const std::string& data,
                                                      const std::string& filename, const std::string& mimetype,
                                                      const send_context& ctx) {
  auto self = impl_;
  std::string safe_name;
  for (unsigned char c : filename)
    safe_name.push_back(c < 0x20 || c == '"' || c == '\\' || c == '/' ? '_' : static_cast<char>(c));
  if (safe_name.empty()) safe_name = "file";
  if (data.size() > self->settings.upload_limit) {
    // Over the upload limit: say so in the channel instead of failing the delivery.
    co_return co_await self->send_text(
        channel_id, fmt::format("[{} ({} bytes) is too large to upload here; the limit is {} bytes]", safe_name,
                                data.size(), self->settings.upload_limit),
        ctx);
  }
  const auto boundary = "sg" + bus::random_hex_id();
  std::string payload = fmt::format(R"({{"attachments":[{{"id":0,"filename":{}}}],"allowed_mentions":{})",
                                    json::quoted(safe_name), impl::allowed_mentions());
  if (!ctx.message_key.empty())
    payload += fmt::format(R"(,"nonce":{},"enforce_nonce":true)", json::quoted(message_nonce(ctx.message_key, 0)));
  payload += "}";
  std::string body = fmt::format(
      "--{0}\r\nContent-Disposition: form-data; name=\"payload_json\"\r\nContent-Type: application/json\r\n\r\n{1}\r\n"
      "--{0}\r\nContent-Disposition: form-data; name=\"files[0]\"; filename=\"{2}\"\r\nContent-Type: {3}\r\n\r\n",
      boundary, payload, safe_name, mimetype.empty() || mimetype.find_first_of("\r\n") != std::string::npos
                                        ? std::string("application/octet-stream")
                                        : mimetype);
  body += data;
  body += "\r\n--" + boundary + "--\r\n";
  co_return co_await self->create_message(channel_id, std::move(body), "multipart/form-data; boundary=" + boundary);
}

task<result<std::string>> discord_platform::send_with_buttons(const std::string& channel_id, const std::string& text,
                                                              const std::vector<bus::button>& buttons,
                                                              const send_context& ctx) {
  auto self = impl_;
  std::string rows;
  const std::size_t count = std::min<std::size_t>(buttons.size(), 25);  // 5 rows of 5
  if (buttons.size() > count) discord_log().warn("{} buttons; Discord shows 25", buttons.size());
  for (std::size_t row = 0; row * 5 < count; ++row) {
    std::string items;
    for (std::size_t i = row * 5; i < std::min(count, row * 5 + 5); ++i) {
      const auto& b = buttons[i];
      const auto label = b.label.substr(0, 80);
      if (!items.empty()) items += ",";
      if (!b.url.empty())
        items += fmt::format(R"({{"type":2,"style":5,"label":{},"url":{}}})", json::quoted(label), json::quoted(b.url));
      else
        items += fmt::format(R"({{"type":2,"style":1,"label":{},"custom_id":{}}})", json::quoted(label),
                             json::quoted((b.id.empty() ? b.label : b.id).substr(0, 100)));
    }
    rows += (rows.empty() ? "" : ",") + fmt::format(R"({{"type":1,"components":[{}]}})", items);
  }
  const auto content = split_message(text.empty() ? std::string("…") : text);
  std::string body = fmt::format(R"({{"content":{},"components":[{}],"allowed_mentions":{})",
                                 json::quoted(content.empty() ? std::string("…") : content.front()), rows,
                                 impl::allowed_mentions());
  if (!ctx.message_key.empty())
    body += fmt::format(R"(,"nonce":{},"enforce_nonce":true)", json::quoted(message_nonce(ctx.message_key, 0)));
  body += "}";
  co_return co_await self->create_message(channel_id, std::move(body));
}

task<void> discord_platform::start_typing(const std::string& channel_id) {
  auto self = impl_;
  if (self->typing.contains(channel_id)) co_return;
  auto t = std::make_shared<asio::steady_timer>(self->redis.get_executor());
  self->typing[channel_id] = t;
  spawn(self->redis.get_executor(), self->typing_loop(channel_id, t), "discord");
}

task<void> discord_platform::stop_typing(const std::string& channel_id) {
  if (auto it = impl_->typing.find(channel_id); it != impl_->typing.end()) {
    it->second->cancel();
    impl_->typing.erase(it);
  }
  co_return;
}

task<bool> discord_platform::add_reaction(const std::string& channel_id, const std::string& message_id,
                                          const std::string& emoji) {
  auto self = impl_;
  rest_request reaction_request{.verb = http::method::put,
                                     .path = fmt::format("/channels/{}/messages/{}/reactions/{}/@me", channel_id,
                                                         message_id, reaction_path_segment(emoji)),
                                     .route = "PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                                     .major = channel_id};
  auto r = co_await self->rest.send(std::move(reaction_request));
  if (!r || r->status >= 300)
    discord_log().warn("reaction {} on {} failed: {}", emoji, message_id, r ? fmt::format("HTTP {}", r->status) : r.error().message());
  co_return true;
}

task<void> discord_platform::set_presence(const std::string& text, const std::string& emoji) {
  for (auto& [id, s] : impl_->shards) s->send_command(presence_command(text, emoji));
  co_return;
}

task<std::vector<history_message>> discord_platform::fetch_history(const std::string& channel_id, int limit) {
  auto self = impl_;
  std::vector<history_message> out;
  rest_request history_request{.verb = http::method::get,
                                     .path = fmt::format("/channels/{}/messages?limit={}", channel_id, std::clamp(limit, 1, 100)),
                                     .route = "GET /channels/{channel_id}/messages",
                                     .major = channel_id};
  auto r = co_await self->rest.send(std::move(history_request));
  if (!r || r->status != 200) co_return out;
  rapidjson::Document doc;
  if (json::nesting_depth(r->body) > 64) co_return out;
  doc.Parse(r->body.data(), r->body.size());
  if (doc.HasParseError() || !doc.IsArray()) co_return out;
  for (const auto& m : doc.GetArray()) {  // newest first
    history_message h;
    h.message_id = json::string_member(m, "id");
    h.text = json::string_member(m, "content");
    h.timestamp = parse_timestamp(json::string_member(m, "timestamp"));
    if (const auto* author = obj(m, "author")) {
      h.user_id = json::string_member(*author, "id");
      h.user_name = impl::display_name(*author);
      h.is_bot = h.user_id == self->bot_user_id;
    }
    if (const auto* ref = obj(m, "message_reference")) h.reply_to_id = json::string_member(*ref, "message_id");
    out.push_back(std::move(h));
  }
  std::reverse(out.begin(), out.end());  // oldest first
  co_return out;
}

task<bool> discord_platform::is_channel_valid(const std::string& channel_id) {
  auto self = impl_;
  auto r = co_await self->redis.command("SISMEMBER", self->key("channels"), channel_id);
  co_return r && r->to_integer().value_or(0) == 1;
}

task<bool> discord_platform::should_skip_channel_heartbeat(const std::string& channel_id) {
  co_return !co_await is_channel_valid(channel_id);
}

}  // namespace stargazer::platform::discord
