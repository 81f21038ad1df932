#include "stargazer/platform/matrix/matrix_platform.hpp"

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/lease.hpp"
#include "stargazer/bus/lock.hpp"
#include "stargazer/core/digest.hpp"
#include "stargazer/core/failpoint.hpp"
#include "stargazer/core/json.hpp"
#include "stargazer/core/json_value.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/core/spawn.hpp"
#include "stargazer/core/strings.hpp"
#include "stargazer/platform/matrix/message_format.hpp"
#include "stargazer/platform/message_cache.hpp"
#include "stargazer/redis/connection.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

namespace stargazer::platform::matrix {

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

const log::logger& matrix_log() {
  static const log::logger instance("matrix");
  return instance;
}

// Stores the next sync token only while the lease is ours: a process that lost it (paused,
// then resumed after another took over) cannot move the token backwards.
const redis::script store_token_script(R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
)lua");

std::string localpart(std::string_view user_id) {
  const auto colon = user_id.find(':');
  return std::string(user_id.substr(user_id.empty() || user_id[0] != '@' ? 0 : 1,
                                    colon == std::string_view::npos ? std::string_view::npos : colon - 1));
}

// What the bot knows of a joined room, from the sync's state and timeline.
struct room_state {
  std::map<std::string, std::string> members;  // joined user id → display name ("" when unset)
  std::optional<power_levels> power;
  std::string name;
  bool encrypted = false;
  bool refused = false;  // encrypted: left, with a notice
};

}  // namespace

struct matrix_platform::impl : std::enable_shared_from_this<impl> {
  impl(redis::connection& r, bus::event_bus& b, matrix_settings s, metrics::registry* m)
      : redis(r), bus(b), settings(std::move(s)), api(r.get_executor(), settings.homeserver, settings.api),
        pause(r.get_executor()), renewal(r.get_executor()) {
    if (m != nullptr) {
      published = &m->make_counter("stargazer_matrix_events_published_total", "Matrix messages published on the bus");
      duplicates = &m->make_counter("stargazer_matrix_events_duplicate_total",
                                    "Matrix events not published again (a batch synced twice)");
      encrypted_refused = &m->make_counter("stargazer_matrix_encrypted_rooms_refused_total",
                                           "Invites to, or rooms turned, end-to-end encrypted: refused or left");
      sync_failures = &m->make_counter("stargazer_matrix_sync_failures_total", "Failed /sync requests");
      edits = &m->make_counter("stargazer_matrix_edits_applied_total", "Edits (m.replace) applied to the history");
    }
  }

  redis::connection& redis;
  bus::event_bus& bus;
  matrix_settings settings;
  client_api api;
  asio::steady_timer pause;
  asio::steady_timer renewal;
  metrics::counter* published = nullptr;
  metrics::counter* duplicates = nullptr;
  metrics::counter* encrypted_refused = nullptr;
  metrics::counter* sync_failures = nullptr;
  metrics::counter* edits = nullptr;

  bool running = false;
  bool authenticated = false;
  bool holding = false;
  std::string fatal;  // credentials refused: not ready
  std::string last_error;
  std::string device_id;
  std::string filter_id;
  std::map<std::string, room_state> rooms;
  std::map<std::string, std::shared_ptr<asio::steady_timer>> typing;
  std::minstd_rand jitter{std::random_device{}()};

  std::string key(std::string_view rest) const { return fmt::format("{}:{}:{}", settings.key_prefix, settings.user_id, rest); }

  asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
    pause.expires_after(d);
    boost::system::error_code ec;
    co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

  std::chrono::milliseconds next_backoff(std::chrono::milliseconds& backoff) {
    const auto wait = backoff / 2 + std::chrono::milliseconds(jitter() % (backoff.count() / 2 + 1));
    backoff = std::min(backoff * 2, settings.backoff_max);
    return wait;
  }

  // ---- credentials ----

  asio::awaitable<void> load_session() {
    auto stored = co_await redis.command("HMGET", key("session"), "access_token", "device_id");
    if (stored && stored->is_array() && stored->elements().size() == 2) {
      if (stored->elements()[0].is_bulk()) api.set_access_token(stored->elements()[0].str());
      if (stored->elements()[1].is_bulk()) device_id = stored->elements()[1].str();
    }
  }

  asio::awaitable<bool> authenticate() {
    // Gateways started together must not each log in: every login would make a device, and
    // transaction ids (what makes a repeated send harmless) hold only within one device.
    // The one holding the login lock logs in; the others find its session when they get it.
    std::optional<bus::distributed_lock> login_lock;
    if (settings.access_token.empty()) {
      login_lock.emplace(redis, key("login_lock"), 30s);
      const std::chrono::milliseconds patience = 45s;  // longer than a dead holder's lock lasts
      const bool locked = co_await login_lock->acquire(patience);
      if (!locked) {
        last_error = "another gateway is logging in (sg:matrix:{user}:login_lock)";
        co_return false;
      }
    }
    const bool signed_in = co_await authenticate_locked();
    if (login_lock) co_await login_lock->release();
    co_return signed_in;
  }

  asio::awaitable<bool> authenticate_locked() {
    if (!settings.access_token.empty()) api.set_access_token(settings.access_token);
    else co_await load_session();
    if (!api.access_token().empty()) {
      auto me = co_await api.whoami();
      if (ok(me)) {
        const auto& who = std::get<whoami_result>(me);
        if (who.user_id != settings.user_id) {
          fatal = fmt::format("the access token belongs to {}, not --matrix-user-id {}", who.user_id, settings.user_id);
          co_return false;
        }
        if (!who.device_id.empty()) device_id = who.device_id;
        co_return true;
      }
      const auto& e = error_of(me);
      if (!is_auth_failure(e)) {
        last_error = "whoami: " + e.to_string();
        co_return false;
      }
      if (!settings.access_token.empty()) {
        fatal = fmt::format("the homeserver refused --matrix-access-token ({}): give a valid token", e.errcode);
        co_return false;
      }
    }
    if (settings.password.empty()) {
      fatal = "no --matrix-access-token or --matrix-password";
      co_return false;
    }
    auto login = co_await api.login_password(settings.user_id, settings.password, device_id);
    if (!ok(login)) {
      const auto& e = error_of(login);
      if (e.status == 403 || is_auth_failure(e)) fatal = "the homeserver refused the password login: " + e.to_string();
      else last_error = "login: " + e.to_string();
      co_return false;
    }
    const auto& l = std::get<login_result>(login);
    device_id = l.device_id;
    co_await redis.command("HSET", key("session"), "access_token", l.access_token, "device_id", l.device_id);
    matrix_log().info("logged in as {} (device {})", l.user_id, l.device_id);
    co_return true;
  }

  asio::awaitable<bool> ensure_filter() {
    if (!filter_id.empty()) co_return true;
    const auto filter = sync_filter_json();
    const auto field = sha256_hex(filter).substr(0, 16);
    auto stored = co_await redis.command("HGET", key("filters"), field);
    if (stored && stored->is_bulk()) {
      filter_id = stored->str();
      co_return true;
    }
    auto uploaded = co_await api.upload_filter(settings.user_id, filter);
    if (!ok(uploaded)) {
      last_error = "filter upload: " + error_of(uploaded).to_string();
      co_return false;
    }
    filter_id = std::get<std::string>(uploaded);
    co_await redis.command("HSET", key("filters"), field, filter_id);
    co_return true;
  }

  // ---- the sync lease ----

  asio::awaitable<bool> renew_lease() {
    auto r = co_await bus::take_or_renew_lease(redis, key("sync_lease"), settings.node_id, settings.lease_ttl);
    if (!r) co_return holding;  // Redis away: the lease may still be ours until it lapses
    const bool now_holding = *r;
    if (now_holding != holding)
      matrix_log().info("{} the sync lease of {}", now_holding ? "holding" : "lost", settings.user_id);
    co_return now_holding;
  }

  asio::awaitable<void> renew_loop() {
    auto self = shared_from_this();
    while (running) {
      holding = co_await renew_lease();
      renewal.expires_after(settings.lease_ttl / 3);
      boost::system::error_code ec;
      co_await renewal.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  // ---- the sync loop ----

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    auto backoff = settings.backoff_min;
    bool fresh_lease = true;
    while (running) {
      if (!fatal.empty()) {
        matrix_log().error("{}", fatal);
        co_await sleep_for(60s);  // not a tight loop; /readyz says why
        continue;
      }
      if (!authenticated) {
        const bool signed_in = co_await authenticate();
        bool filtered = false;
        if (signed_in) filtered = co_await ensure_filter();
        authenticated = filtered;
        if (!authenticated) {
          if (fatal.empty()) {
            const auto wait = next_backoff(backoff);
            matrix_log().warn("{}; again in {} ms", last_error, wait.count());
            co_await sleep_for(wait);
          }
          continue;
        }
        backoff = settings.backoff_min;
      }
      if (!holding) {
        fresh_lease = true;
        co_await sleep_for(settings.lease_ttl / 3);
        continue;
      }
      auto since_reply = co_await redis.command("GET", key("next_batch"));
      if (!since_reply) {
        co_await sleep_for(next_backoff(backoff));
        continue;
      }
      const std::string since = since_reply->is_bulk() ? since_reply->str() : std::string();
      // First start: one sync without waiting, to learn the token; its history is not answered.
      const auto timeout = since.empty() ? 0ms : settings.sync_timeout;
      const bool full_state = fresh_lease && !since.empty();
      auto body = co_await api.sync(since, filter_id, timeout, full_state);
      if (!ok(body)) {
        const auto& e = error_of(body);
        if (sync_failures != nullptr) sync_failures->inc();
        if (is_auth_failure(e)) {
          authenticated = false;
          api.set_access_token({});
          if (!settings.access_token.empty())
            fatal = fmt::format("the homeserver refused --matrix-access-token ({})", e.errcode);
          else co_await redis.command("HDEL", key("session"), "access_token");  // log in again, same device
          continue;
        }
        const auto wait = is_rate_limited(e) && e.retry_after ? *e.retry_after : next_backoff(backoff);
        matrix_log().warn("/sync failed: {}; again in {} ms", e.to_string(), wait.count());
        co_await sleep_for(wait);
        continue;
      }
      if (!holding) continue;  // lost meanwhile: the holder syncs this again
      auto decoded = decode_sync(std::get<std::string>(body), settings.user_id);
      if (auto* why = std::get_if<std::string>(&decoded)) {
        if (sync_failures != nullptr) sync_failures->inc();
        matrix_log().error("a /sync response is unusable ({}); the same token is tried again", *why);
        co_await sleep_for(next_backoff(backoff));
        continue;
      }
      auto& batch = std::get<sync_batch>(decoded);
      for (const auto& s : batch.skipped)
        matrix_log().debug("skipped {} {} in {}: {}", s.type, s.event_id, s.room_id, s.reason);
      std::string not_applied;
      try {
        co_await apply(batch, !since.empty());
      } catch (const std::exception& e) {
        not_applied = e.what();
      }
      if (!not_applied.empty()) {
        // Publishing failed (Redis away): the token stays, the batch comes again, the
        // events published already are recognised by their markers.
        matrix_log().warn("batch not applied: {}", not_applied);
        co_await sleep_for(next_backoff(backoff));
        continue;
      }
      const std::vector<std::string> keys{key("sync_lease"), key("next_batch")};
      const std::vector<std::string> args{settings.node_id, batch.next_batch};
      co_await redis.eval(store_token_script, keys, args);
      fresh_lease = false;
      backoff = settings.backoff_min;
    }
  }

  // ---- a batch ----

  asio::awaitable<void> apply(const sync_batch& batch, bool publish_messages) {
    for (const auto& invite : batch.invited) co_await on_invite(invite);
    for (const auto& room_id : batch.left) {
      rooms.erase(room_id);
      co_await redis.command("SREM", key("rooms"), room_id);
    }
    for (const auto& joined : batch.joined) {
      auto& room = rooms[joined.room_id];
      for (const auto& [user, member] : joined.members) {
        if (member.membership == "join") room.members[user] = member.displayname.value_or("");
        else room.members.erase(user);
      }
      if (joined.power) room.power = joined.power;
      if (joined.name) room.name = *joined.name;
      co_await redis.command("SADD", key("rooms"), joined.room_id);
      if (joined.encrypted && !room.refused) {
        room.encrypted = room.refused = true;
        co_await refuse_encrypted(joined.room_id);
        continue;
      }
      if (room.refused || !publish_messages) continue;
      const auto member_count = joined.joined_member_count.value_or(static_cast<std::int64_t>(room.members.size()));
      for (const auto& event : joined.events)
        if (const auto* m = std::get_if<message_event>(&event)) co_await on_message(joined.room_id, room, member_count, *m);
    }
  }

  asio::awaitable<void> on_invite(const invited_room& invite) {
    const auto decision = should_join(settings.join_policy, invite.inviter, settings.allowed_users, invite.encrypted);
    if (!decision.join) {
      matrix_log().info("invite to {} by {} declined: {}", invite.room_id, invite.inviter, decision.reason);
      if (invite.encrypted && encrypted_refused != nullptr) encrypted_refused->inc();
      co_await api.leave(invite.room_id);
      co_return;
    }
    auto joined = co_await api.join(invite.room_id);
    if (!ok(joined)) matrix_log().warn("joining {} failed: {}", invite.room_id, error_of(joined).to_string());
    else matrix_log().info("joined {} (invited by {})", invite.room_id, invite.inviter);
  }

  asio::awaitable<void> refuse_encrypted(const std::string& room_id) {
    matrix_log().warn("{} is end-to-end encrypted, which Stargazer does not support: leaving it", room_id);
    if (encrypted_refused != nullptr) encrypted_refused->inc();
    const auto notice = notice_content(
        "This room is end-to-end encrypted. I cannot read encrypted messages, so I am leaving it.", nullptr, {});
    co_await api.send_event(room_id, "m.room.message", txn_id_for("encrypted-notice:" + room_id, 0), notice);
    co_await api.leave(room_id);
    co_await redis.command("SREM", key("rooms"), room_id);
  }

  asio::awaitable<void> on_message(const std::string& room_id, const room_state& room, std::int64_t member_count,
                                   const message_event& m) {
    if (m.is_edit() && m.sender != settings.user_id) {
      if (user_allowed(m.sender, settings.allowed_users)) co_await on_edit(room_id, room, m);
      co_return;
    }
    if (should_ignore(m, settings.user_id)) co_return;
    if (!user_allowed(m.sender, settings.allowed_users)) co_return;
    const auto click = co_await button_click(room_id, m);
    std::string replied_to_sender;
    if (!m.reply_to.empty()) {
      auto own = co_await redis.command("EXISTS", key("own:" + m.reply_to));
      if (own && own->to_integer().value_or(0) == 1) replied_to_sender = settings.user_id;
    }
    bus::inbound_envelope e;
    e.platform = "matrix";
    e.channel_id = room_id;
    e.message_id = m.event_id;
    e.user_id = m.sender;
    const auto member = room.members.find(m.sender);
    e.username = member != room.members.end() && !member->second.empty() ? member->second : localpart(m.sender);
    e.content = m.msgtype == "m.emote" ? fmt::format("* {} {}", e.username, m.body) : m.body;
    e.timestamp = static_cast<double>(m.origin_server_ts) / 1000.0;
    e.reply_to = m.reply_to;
    e.room_name = room.name;
    e.member_count = member_count;
    e.is_dm = member_count == 2;
    if (m.media) {
      bus::attachment a;
      a.filename = m.media->filename;
      a.mimetype = m.media->mimetype;
      a.source_url = m.media->url;  // mxc://; the bytes are fetched when a tool needs them
      e.attachments.push_back(std::move(a));
    }
    e.is_addressed = is_addressed(m, settings.user_id, settings.bot_name, member_count,
                                  replied_to_sender.empty() ? nullptr : &replied_to_sender);
    if (click) {  // the answer to a numbered list: a click on that option, as on Discord
      e.content = click->id;
      e.reply_to = click->prompt_event_id;
      e.extra["interaction"] = "button";
      e.is_addressed = true;
    }
    if (room.power && is_room_admin(*room.power, m.sender)) e.member_roles.emplace_back(bus::platform_admin_role);
    auto r = co_await bus.publish_inbound_once(e, key("seen:" + m.event_id), std::chrono::hours(24));
    if (!r) throw std::runtime_error("publishing failed: " + r.error().message());
    if (r->entry_id.empty()) {
      if (duplicates != nullptr) duplicates->inc();
      co_return;
    }
    if (published != nullptr) published->inc();
    failpoint("matrix.event_published");  // tests: killed before the batch's token is stored
    // The worker's reply names the entry in its message key: this finds what it answers.
    co_await redis.command("SET", key("entry:" + r->entry_id), m.event_id + "\n" + m.sender, "EX", "86400");
  }

  // An edit (m.replace) changes the text the history shows; it starts no turn. The spec
  // lets only the original's sender edit it, which the cache's script checks.
  asio::awaitable<void> on_edit(const std::string& room_id, const room_state& room, const message_event& m) {
    const auto& edit = *m.edit;
    std::string text = edit.body;
    if (edit.msgtype == "m.emote") {
      const auto member = room.members.find(m.sender);
      text = fmt::format("* {} {}", member != room.members.end() && !member->second.empty() ? member->second
                                                                                           : localpart(m.sender),
                         edit.body);
    }
    message_cache cache(redis);
    auto r = co_await cache.edit("matrix", room_id, edit.replaces_event_id, m.sender, m.event_id, text);
    if (!r) throw std::runtime_error("storing an edit failed: " + r.error().message());
    if (!*r) matrix_log().debug("edit {} of {}: the original is not in the history (or not the sender's)",
                                m.event_id, edit.replaces_event_id);
    else if (edits != nullptr) edits->inc();
  }

  // ---- numbered options (Matrix has no buttons) ----

  struct option_click {
    std::string id;               // the button's id, what a Discord click carries
    std::string prompt_event_id;  // the bot's message with the list
  };

  // A prompt is kept under its event id (a reply to it picks an option for a week) and as
  // the room's latest (a plain "2" picks one for an hour, once, unless the bot said something
  // else since).
  std::string prompt_key(std::string_view event_id) const { return key(fmt::format("prompt:{}", event_id)); }
  std::string latest_prompt_key(std::string_view room_id) const { return key(fmt::format("prompt_latest:{}", room_id)); }

  static std::string prompt_json(const std::string& event_id, const std::vector<bus::button>& buttons) {
    std::string labels, ids;
    for (const auto& b : buttons) {
      if (!labels.empty()) labels += ',', ids += ',';
      labels += json::quoted(b.label);
      ids += json::quoted(b.url.empty() ? b.id : std::string());  // a link is not a choice
    }
    return fmt::format(R"({{"event_id":{},"labels":[{}],"ids":[{}]}})", json::quoted(event_id), labels, ids);
  }

  asio::awaitable<void> remember_prompt(const std::string& room_id, const std::string& event_id,
                                        const std::vector<bus::button>& buttons) {
    const auto value = prompt_json(event_id, buttons);
    redis::request req;
    req.push("SET", prompt_key(event_id), value, "EX", std::to_string(7 * 86400));
    req.push("SET", latest_prompt_key(room_id), value, "EX", "3600");
    auto stored = co_await redis.exec(std::move(req));
    if (!stored) matrix_log().warn("options in {} not kept; answers are read as text: {}", room_id, stored.error().message());
  }

  asio::awaitable<std::optional<option_click>> button_click(const std::string& room_id, const message_event& m) {
    // A choice is a number or a label: short. Longer messages cost no lookup.
    if (m.media || m.body.size() > 200) co_return std::nullopt;
    const bool latest = m.reply_to.empty();
    const auto prompt = latest ? latest_prompt_key(room_id) : prompt_key(m.reply_to);
    auto stored = co_await redis.command("GET", prompt);
    if (!stored || !stored->is_bulk()) co_return std::nullopt;
    auto parsed = json::parse_object(stored->str(), 4);
    auto* doc = std::get_if<rapidjson::Document>(&parsed);
    if (doc == nullptr || !doc->HasMember("labels") || !(*doc)["labels"].IsArray() || !doc->HasMember("ids") ||
        !(*doc)["ids"].IsArray())
      co_return std::nullopt;
    std::vector<std::string> labels, ids;
    for (const auto& l : (*doc)["labels"].GetArray()) labels.emplace_back(l.IsString() ? l.GetString() : "");
    for (const auto& i : (*doc)["ids"].GetArray()) ids.emplace_back(i.IsString() ? i.GetString() : "");
    const auto choice = button_choice(m.body, labels);
    if (!choice || *choice >= ids.size() || ids[*choice].empty()) co_return std::nullopt;
    if (latest) co_await redis.command("DEL", prompt);
    co_return option_click{ids[*choice], json::string_member(*doc, "event_id")};
  }

  // ---- outbound ----

  // The event a turn answers: the inbound entry named in the message key
  // ("sg:msg:{platform}:{channel}:{entry}:{n}", docs/protocol.md §4.5), first send only.
  asio::awaitable<std::optional<std::pair<std::string, std::string>>> answered(const std::string& message_key) {
    const auto last = message_key.rfind(':');
    if (last == std::string::npos || message_key.substr(last + 1) != "0") co_return std::nullopt;
    const auto prev = message_key.rfind(':', last - 1);
    if (prev == std::string::npos) co_return std::nullopt;
    auto r = co_await redis.command("GET", key("entry:" + message_key.substr(prev + 1, last - prev - 1)));
    if (!r || !r->is_bulk()) co_return std::nullopt;
    const auto& v = r->str();
    const auto nl = v.find('\n');
    if (nl == std::string::npos) co_return std::nullopt;
    co_return std::make_pair(v.substr(0, nl), v.substr(nl + 1));
  }

  std::string txn(const send_context& ctx, std::string_view what, int part) {
    // Without a message key (never from the bus) a send is not repeated: any unique id does.
    if (ctx.message_key.empty()) return txn_id_for(fmt::format("{}:{}", what, jitter()), part);
    return txn_id_for(fmt::format("{}:{}", ctx.message_key, what), part);
  }

  asio::awaitable<result<std::string>> send_contents(const std::string& room_id, const std::vector<std::string>& contents,
                                                     const send_context& ctx, std::string_view what) {
    std::string first;
    for (std::size_t i = 0; i < contents.size(); ++i) {
      auto sent = co_await api.send_event(room_id, "m.room.message", txn(ctx, what, static_cast<int>(i)), contents[i]);
      if (!ok(sent)) {
        const auto& e = error_of(sent);
        matrix_log().warn("message to {} refused: {}", room_id, e.to_string());
        co_return make_error_code(e.status == 403 || e.status == 404 ? errc::invalid_argument
                                  : e.status == 0                    ? errc::connection_lost
                                                                     : errc::unexpected_reply);
      }
      const auto& event_id = std::get<std::string>(sent);
      failpoint("matrix.sent");  // tests: the homeserver has the event, its marker is not written
      co_await redis.command("SET", key("own:" + event_id), "1", "EX", std::to_string(7 * 86400));
      if (first.empty()) first = event_id;
    }
    co_return first;
  }

  asio::awaitable<result<std::string>> send_text(const std::string& room_id, const std::string& text,
                                                 const send_context& ctx, std::string_view what) {
    reply_target target;
    std::vector<std::string> mentions;
    if (auto a = co_await answered(ctx.message_key)) {
      target.event_id = a->first;
      if (a->second != settings.user_id) mentions.push_back(a->second);
    }
    const auto contents = text_contents(text.empty() ? std::string("…") : text,
                                        target.event_id.empty() ? nullptr : &target, mentions);
    auto sent = co_await send_contents(room_id, contents, ctx, what);
    if (sent) {
      if (!target.event_id.empty()) co_await api.send_receipt(room_id, target.event_id);
      co_await remember_reply(room_id, *sent, text, ctx, what);
    }
    co_return sent;
  }

  // The bot's reply joins the history the model reads next (its own events come back in
  // /sync but are not read), under the message key, so a repeated send stores it once.
  asio::awaitable<void> remember_reply(const std::string& room_id, const std::string& event_id, const std::string& text,
                                       const send_context& ctx, std::string_view what) {
    const auto now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    const cached_message reply{event_id, settings.user_id, settings.bot_name, text, now, true, {}};
    redis::request req;
    for (const auto& command : message_cache::store_commands(redis, "matrix", room_id, reply, ctx.message_key))
      req.push_range(command);
    // Anything the bot says after a list of options ends the plain-number answers to it.
    if (what != "buttons") req.push("DEL", latest_prompt_key(room_id));
    auto stored = co_await redis.exec(std::move(req));
    if (!stored) matrix_log().warn("reply in {} not kept for the history: {}", room_id, stored.error().message());
  }

  asio::awaitable<void> typing_loop(std::string room_id, std::shared_ptr<asio::steady_timer> t) {
    auto self = shared_from_this();
    const auto until = std::chrono::steady_clock::now() + 2min;  // a lost stop_typing ends here
    while (running && typing.contains(room_id) && typing[room_id] == t && std::chrono::steady_clock::now() < until) {
      co_await api.set_typing(room_id, settings.user_id, true, 30s);
      t->expires_after(20s);  // refreshed before the 30 s the server shows it
      boost::system::error_code ec;
      co_await t->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (typing.contains(room_id) && typing[room_id] == t) typing.erase(room_id);
  }
};

matrix_platform::matrix_platform(redis::connection& redis, bus::event_bus& bus, matrix_settings settings,
                                 metrics::registry* metrics)
    : impl_(std::make_shared<impl>(redis, bus, std::move(settings), metrics)) {}

matrix_platform::~matrix_platform() {
  impl_->running = false;
  impl_->pause.cancel();
  impl_->renewal.cancel();
}

readiness matrix_platform::health() const {
  if (!impl_->fatal.empty()) return {false, impl_->fatal};
  if (!impl_->authenticated) return {false, impl_->last_error.empty() ? "signing in" : impl_->last_error};
  return {true, impl_->holding ? "syncing (holds the sync lease)" : "standing by (another gateway syncs)"};
}

bool matrix_platform::holds_sync_lease() const { return impl_->holding; }

task<void> matrix_platform::start() {
  auto self = impl_;
  self->running = true;
  auto ex = self->redis.get_executor();
  spawn(ex, [self]() -> asio::awaitable<void> { co_await self->renew_loop(); }, "matrix-lease");
  spawn(ex, [self]() -> asio::awaitable<void> { co_await self->run(); }, "matrix-sync");
  co_return;
}

task<void> matrix_platform::stop() {
  auto self = impl_;
  self->running = false;
  self->pause.cancel();
  self->renewal.cancel();
  for (auto& [room, t] : self->typing) t->cancel();
  if (self->holding) {
    // Another gateway takes over at once.
    co_await bus::release_lease(self->redis, self->key("sync_lease"), self->settings.node_id);
    self->holding = false;
  }
}

bool matrix_platform::is_running() const { return impl_->running; }

bot_identity matrix_platform::identity() const { return {impl_->settings.user_id, impl_->settings.bot_name}; }

task<result<std::string>> matrix_platform::send(const std::string& channel_id, const std::string& text,
                                                const send_context& ctx) {
  auto self = impl_;
  co_return co_await self->send_text(channel_id, text, ctx, "text");
}

task<result<std::string>> matrix_platform::send_file(const std::string& channel_id, const std::string& data,
                                                     const std::string& filename, const std::string& mimetype,
                                                     const send_context& ctx) {
  auto self = impl_;
  if (data.size() > self->settings.upload_limit)
    co_return co_await self->send_text(
        channel_id, fmt::format("[{} is {} bytes, over the upload limit]", filename, data.size()), ctx, "file");
  auto uploaded = co_await self->api.upload(data, filename, mimetype);
  if (!ok(uploaded)) {
    matrix_log().warn("upload of {} failed: {}", filename, error_of(uploaded).to_string());
    co_return make_error_code(errc::unexpected_reply);
  }
  const std::vector<std::string> contents{
      file_content(std::get<std::string>(uploaded), filename, mimetype, data.size())};
  co_return co_await self->send_contents(channel_id, contents, ctx, "file");
}

task<result<std::string>> matrix_platform::send_with_buttons(const std::string& channel_id, const std::string& text,
                                                             const std::vector<bus::button>& buttons,
                                                             const send_context& ctx) {
  // Matrix has no buttons: the options as a numbered list (the reply is read as text).
  std::vector<std::string> labels;
  for (const auto& b : buttons) labels.push_back(b.url.empty() ? b.label : fmt::format("{} ({})", b.label, b.url));
  auto self = impl_;
  auto sent = co_await self->send_text(channel_id, buttons_text(text, labels), ctx, "buttons");
  if (sent) co_await self->remember_prompt(channel_id, *sent, buttons);
  co_return sent;
}

task<void> matrix_platform::start_typing(const std::string& channel_id) {
  auto self = impl_;
  auto t = std::make_shared<asio::steady_timer>(self->redis.get_executor());
  if (auto it = self->typing.find(channel_id); it != self->typing.end()) it->second->cancel();
  self->typing[channel_id] = t;
  spawn(self->redis.get_executor(), [self, channel_id, t]() -> asio::awaitable<void> {
    co_await self->typing_loop(channel_id, t);
  }, "matrix-typing");
  co_return;
}

task<void> matrix_platform::stop_typing(const std::string& channel_id) {
  auto self = impl_;
  if (auto it = self->typing.find(channel_id); it != self->typing.end()) {
    it->second->cancel();
    self->typing.erase(it);
  }
  co_await self->api.set_typing(channel_id, self->settings.user_id, false);
}

task<bool> matrix_platform::add_reaction(const std::string& channel_id, const std::string& message_id,
                                         const std::string& emoji) {
  auto self = impl_;
  // One reaction per (event, key): a repeat is the same transaction.
  auto sent = co_await self->api.send_event(channel_id, "m.reaction", txn_id_for("reaction:" + message_id + ":" + emoji, 0),
                                            reaction_content(message_id, emoji));
  co_return ok(sent);
}

task<void> matrix_platform::set_presence(const std::string& text, const std::string& emoji) {
  auto self = impl_;
  co_await self->api.set_presence(self->settings.user_id, emoji.empty() ? text : emoji + " " + text);
}

task<std::vector<history_message>> matrix_platform::fetch_history(const std::string& channel_id, int limit) {
  auto self = impl_;
  std::vector<history_message> out;
  auto body = co_await self->api.messages(channel_id, "", "b", std::clamp(limit, 1, 100),
                                          R"({"types":["m.room.message"]})");
  if (!ok(body)) co_return out;
  auto parsed = json::parse_object(std::get<std::string>(body), 64);
  auto* doc = std::get_if<rapidjson::Document>(&parsed);
  if (doc == nullptr || !doc->HasMember("chunk") || !(*doc)["chunk"].IsArray()) co_return out;
  for (const auto& ev : (*doc)["chunk"].GetArray()) {
    if (!ev.IsObject() || json::string_member(ev, "type") != "m.room.message") continue;
    const auto content = ev.FindMember("content");
    if (content == ev.MemberEnd() || !content->value.IsObject()) continue;
    history_message h;
    h.message_id = json::string_member(ev, "event_id");
    h.user_id = json::string_member(ev, "sender");
    h.user_name = localpart(h.user_id);
    h.text = strip_reply_fallback(json::string_member(content->value, "body"));
    if (const auto ts = ev.FindMember("origin_server_ts"); ts != ev.MemberEnd() && ts->value.IsInt64())
      h.timestamp = static_cast<double>(ts->value.GetInt64()) / 1000.0;
    h.is_bot = h.user_id == self->settings.user_id;
    if (h.text.empty() || h.message_id.empty()) continue;
    out.push_back(std::move(h));
  }
  std::reverse(out.begin(), out.end());  // oldest first, as the other adapters give it
  co_return out;
}

task<bool> matrix_platform::is_channel_valid(const std::string& channel_id) {
  auto self = impl_;
  auto r = co_await self->redis.command("SISMEMBER", self->key("rooms"), channel_id);
  co_return r && r->to_integer().value_or(0) == 1;
}

task<bool> matrix_platform::should_skip_channel_heartbeat(const std::string& channel_id) {
  (void)channel_id;
  co_return false;
}

}  // namespace stargazer::platform::matrix
