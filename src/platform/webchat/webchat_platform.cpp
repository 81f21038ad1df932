#include "stargazer/platform/webchat/webchat_platform.hpp"
#include "stargazer/platform/webchat/webchat_protocol.hpp"

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/lock.hpp"
#include "stargazer/core/spawn.hpp"
#include "stargazer/core/digest.hpp"
#include "stargazer/core/error.hpp"
#include "stargazer/core/json.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/strings.hpp"
#include "stargazer/http/json_body.hpp"
#include "stargazer/http/router.hpp"
#include "stargazer/http/server.hpp"
#include "stargazer/platform/message_cache.hpp"
#include "stargazer/platform/redis/redis_platform.hpp"
#include "stargazer/redis/connection.hpp"
#include "stargazer/redis/subscriber.hpp"

#include "platform/webchat/webchat_assets.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <deque>
#include <set>
#include <unordered_map>
#include <variant>

namespace stargazer::platform {

namespace asio = boost::asio;
using http::request;
using http::response;
using clock_type = std::chrono::steady_clock;

namespace {

const std::string platform_name = "webchat";
constexpr std::string_view room_prefix = "stargazer:webchat:room:";
constexpr std::string_view file_marker = "[file] ";  // cached text of a file message: "[file] {filename}"

const rapidjson::Value* member(const rapidjson::Value& obj, const char* name) {
  const auto it = obj.FindMember(name);
  return it == obj.MemberEnd() || it->value.IsNull() ? nullptr : &it->value;
}

// ---------------------------------------------------------------------------------------
// State

// One browser tab's socket.
struct client {
  std::weak_ptr<http::websocket_session> ws;
  std::string connection_id = bus::random_hex_id();  // its member in the room's presence set
  std::string room;  // empty until joined
  std::string user_id;
  std::string name;
  std::optional<webchat_identity> identity;  // signed in (auth invite): who this is, whatever the frames say
  std::deque<std::string> inbox;  // frames waiting to be handled, in arrival order
  bool draining = false;
  bool closed = false;
  double tokens = 0;
  clock_type::time_point refilled = clock_type::now();

  void send(std::string frame) const {
    if (auto s = ws.lock()) s->send(std::move(frame));
  }
};

const log::logger& webchat_log() {
  static const log::logger instance("webchat");
  return instance;
}

// ---------------------------------------------------------------------------------------
// Sign-in: JSON shapes and the checks on what operators send

std::string time_json(std::int64_t unix_seconds) {
  return unix_seconds > 0 ? json::quoted(iso_time(static_cast<double>(unix_seconds))) : std::string("null");
}

std::string identity_json(const webchat_identity& s) {
  return fmt::format(
      R"({{"session_id":{},"name":{},"user_id":{},"rooms":{},"admin":{},"created_at":{},"expires_at":{},"invite_id":{}}})",
      json::quoted(s.session_id), json::quoted(s.name), json::quoted(s.user_id), json::string_array(s.rooms),
      s.admin ? "true" : "false", time_json(s.created_at), time_json(s.expires_at), json::quoted(s.invite_id));
}

std::string invite_json(const webchat_invite& i) {
  return fmt::format(
      R"({{"invite_id":{},"name":{},"user_id":{},"rooms":{},"admin":{},"created_at":{},"expires_at":{},"state":{},"used_at":{},"session_id":{}}})",
      json::quoted(i.invite_id), json::quoted(i.name), json::quoted(i.user_id), json::string_array(i.rooms),
      i.admin ? "true" : "false", time_json(i.created_at), time_json(i.expires_at), json::quoted(i.state),
      time_json(i.used_at), i.session_id.empty() ? std::string("null") : json::quoted(i.session_id));
}

response bad_request(std::string_view code, const std::string& message) { return response::error(400, code, message); }

// POST /webchat/invites: {"name": ..., "rooms": [...], "expires_in": seconds, "admin": bool}.
std::variant<webchat_auth_store::invite_request, response> parse_invite_body(const rapidjson::Value& body,
                                                                             const webchat_settings& s) {
  const auto& limits = s.invite_limits;
  webchat_auth_store::invite_request out;
  out.ttl = s.default_invite_ttl;
  const auto* name = member(body, "name");
  if (name == nullptr) return bad_request("missing_field", "'name' is required: the name the invited person speaks as");
  if (!name->IsString()) return bad_request("bad_field_type", "'name' must be a string");
  const auto normalized = normalized_display_name(std::string_view(name->GetString(), name->GetStringLength()),
                                                  limits.max_name_bytes);
  if (!normalized)
    return bad_request("bad_name", fmt::format("'name' is 1-{} bytes without control characters", limits.max_name_bytes));
  if (iequals(*normalized, s.bot_name)) return bad_request("reserved_name", "'name' is the bot's name");
  out.name = *normalized;
  if (const auto* rooms = member(body, "rooms")) {
    if (!rooms->IsArray()) return bad_request("bad_field_type", "'rooms' must be an array of room names");
    if (rooms->Size() > limits.max_rooms)
      return bad_request("too_many_rooms", fmt::format("'rooms' holds at most {} rooms", limits.max_rooms));
    for (const auto& r : rooms->GetArray()) {
      const std::string_view room = r.IsString() ? std::string_view(r.GetString(), r.GetStringLength()) : "";
      if (!valid_room_id(room, limits.max_room_bytes))
        return bad_request("bad_room", fmt::format("each room is 1-{} characters of a-z, 0-9, '-' and '_'",
                                                   limits.max_room_bytes));
      if (std::find(out.rooms.begin(), out.rooms.end(), room) == out.rooms.end()) out.rooms.emplace_back(room);
    }
  }
  if (const auto* expires = member(body, "expires_in")) {
    if (!expires->IsInt64() || expires->GetInt64() < 1 || expires->GetInt64() > limits.max_ttl.count())
      return bad_request("bad_expires_in", fmt::format("'expires_in' is whole seconds from 1 to {}", limits.max_ttl.count()));
    out.ttl = std::chrono::seconds(expires->GetInt64());
  }
  if (const auto* admin = member(body, "admin")) {
    if (!admin->IsBool()) return bad_request("bad_field_type", "'admin' must be true or false");
    out.admin = admin->GetBool();
  }
  return out;
}

// Session answers are about one browser: never cached by anyone.
response private_json(unsigned status, std::string body) {
  auto res = response::json(status, std::move(body));
  res.headers.emplace_back("Cache-Control", "no-store");
  return res;
}

}  // namespace

struct webchat_platform::impl : std::enable_shared_from_this<impl> {
  impl(redis::connection& c, bus::event_bus& b, redis::subscriber& s, webchat_settings st)
      : conn(c),
        bus(b),
        sub(s),
        settings(std::move(st)),
        presence_timer(c.get_executor()),
        session_timer(c.get_executor()) {}

  redis::connection& conn;
  bus::event_bus& bus;
  redis::subscriber& sub;
  webchat_settings settings;
  message_cache cache{conn};
  std::set<std::shared_ptr<client>> clients;
  std::unordered_map<std::string, std::set<std::shared_ptr<client>>> rooms;
  bool running = false;
  asio::steady_timer presence_timer;  // the next presence refresh; cancelled by stop()
  webchat_auth_store auth{conn};
  asio::steady_timer session_timer;  // the next check of the sockets' sessions; cancelled by stop()

  bool invite_only() const { return settings.auth == webchat_auth_mode::invite; }

  // ---- presence ----------------------------------------------------------------------------

  std::chrono::seconds presence_ttl() const { return 3 * settings.presence_refresh; }

  // Members confirmed after this are present: "(" + unix seconds, for ZRANGEBYSCORE.
  std::string presence_cutoff() const {
    return fmt::format("({:.3f}", now_unix() - static_cast<double>(presence_ttl().count()));
  }

  // The commands that record `c` as present in its room (the set expires with the room's last member).
  std::vector<std::vector<std::string>> presence_commands(const client& c) const {
    const auto key = webchat_members_key(c.room);
    return {{"ZADD", key, fmt::format("{:.3f}", now_unix()), presence_member(c.user_id, c.connection_id)},
            {"EXPIRE", key, std::to_string(presence_ttl().count())}};
  }

  // Confirms this gateway's connections every presence_refresh and drops members nobody
  // confirmed (another gateway's, after it died).
  static asio::awaitable<void> refresh_presence(std::shared_ptr<impl> self) {
    while (self->running) {
      self->presence_timer.expires_after(self->settings.presence_refresh);
      boost::system::error_code ec;
      co_await self->presence_timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (!self->running) break;
      redis::request req;
      for (const auto& [room, members] : self->rooms) {
        req.push("ZREMRANGEBYSCORE", webchat_members_key(room), "-inf", self->presence_cutoff().substr(1));
        for (const auto& c : members)
          for (const auto& cmd : self->presence_commands(*c)) req.push_range(cmd);
      }
      if (req.commands() == 0) continue;
      auto r = co_await self->conn.exec(std::move(req));
      if (!r) webchat_log().debug("presence not refreshed: {}", r.error().message());
    }
  }

  // ---- sockets --------------------------------------------------------------------------

  void open(const std::shared_ptr<http::websocket_session>& ws) {
    auto c = std::make_shared<client>();
    c->ws = ws;
    c->tokens = settings.message_burst;
    if (const auto* who = std::any_cast<webchat_identity>(&ws->upgrade_request().context)) c->identity = *who;
    clients.insert(c);
    // The session drops both callbacks when it closes, which breaks the cycle.
    ws->on_message = [self = shared_from_this(), c](std::string_view text) { self->on_frame(c, text); };
    ws->on_closed = [self = shared_from_this(), c] { self->leave(c, true); };
    auto hello = fmt::format(
        R"({{"type":"hello","bot":{{"user_id":{},"name":{}}},"default_room":{},"limits":{{"frame_bytes":{},"text_bytes":{},"name_bytes":{},"room_bytes":{}}}}})",
        json::quoted(settings.bot_user_id), json::quoted(settings.bot_name),
        json::quoted(c->identity && !c->identity->rooms.empty() ? c->identity->rooms.front() : "lobby"),
        settings.max_frame_bytes, settings.max_text_bytes, settings.max_name_bytes, settings.max_room_bytes);
    if (c->identity) {
      // Signed in: the page shows who it is and which rooms it may use.
      hello.pop_back();
      hello += fmt::format(R"(,"auth":"invite","you":{{"user_id":{},"name":{},"admin":{},"rooms":{}}}}})",
                           json::quoted(c->identity->user_id), json::quoted(c->identity->name),
                           c->identity->admin ? "true" : "false", json::string_array(c->identity->rooms));
    }
    c->send(std::move(hello));
  }

  // Closes this gateway's sockets of a session that was revoked, signed out or expired.
  void close_session(std::string_view session_digest) {
    const auto snapshot = clients;  // closing calls back into leave()
    for (const auto& c : snapshot) {
      if (!c->identity || c->identity->session_digest != session_digest) continue;
      if (auto s = c->ws.lock()) s->close();
    }
  }

  // Every session_check_interval: the sessions of this gateway's sockets still exist.
  // Revocations arrive at once over Pub/Sub; this catches a message lost while the
  // subscription was down, and sessions that expired.
  static asio::awaitable<void> check_sessions(std::shared_ptr<impl> self) {
    while (self->running) {
      self->session_timer.expires_after(self->settings.session_check_interval);
      boost::system::error_code ec;
      co_await self->session_timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (!self->running) break;
      std::set<std::string> distinct;
      for (const auto& c : self->clients)
        if (c->identity) distinct.insert(c->identity->session_digest);
      if (distinct.empty()) continue;
      std::vector<std::string> digests(distinct.begin(), distinct.end());
      auto alive = co_await self->auth.alive(digests);
      if (!alive) {
        webchat_log().debug("sessions not checked: {}", alive.error().message());  // kept until Redis answers
        continue;
      }
      for (std::size_t i = 0; i < digests.size() && i < alive->size(); ++i)
        if (!(*alive)[i]) self->close_session(digests[i]);
    }
  }

  // A join's caller moves the presence itself (in order with the new room's); a closed
  // connection's member is removed here.
  void leave(const std::shared_ptr<client>& c, bool closed) {
    if (!c->room.empty()) {
      if (auto it = rooms.find(c->room); it != rooms.end()) {
        it->second.erase(c);
        if (it->second.empty()) rooms.erase(it);
      }
    }
    if (closed) {
      c->closed = true;
      clients.erase(c);
      c->inbox.clear();
      if (!c->room.empty()) {
        const auto key = webchat_members_key(c->room);
        const auto member = presence_member(c->user_id, c->connection_id);
        spawn(conn.get_executor(), [self = shared_from_this(), key, member]() -> asio::awaitable<void> {
          auto r = co_await self->conn.command("ZREM", key, member);
          if (!r) webchat_log().debug("presence not removed: {}", r.error().message());
        }, "webchat");
      }
    }
  }

  void on_frame(const std::shared_ptr<client>& c, std::string_view text) {
    if (text.size() > settings.max_frame_bytes) {
      c->send(error_frame("frame_too_large",
                          fmt::format("frames are at most {} bytes", settings.max_frame_bytes)));
      return;
    }
    if (c->inbox.size() >= settings.max_queued_frames) {
      c->send(error_frame("too_many_frames", "too many frames at once; slow down"));
      return;
    }
    c->inbox.emplace_back(text);
    if (c->draining) return;
    c->draining = true;
    spawn(conn.get_executor(), drain(shared_from_this(), c), "webchat");
  }

  // Handles one connection's frames one at a time, so its messages keep their order.
  static asio::awaitable<void> drain(std::shared_ptr<impl> self, std::shared_ptr<client> c) {
    while (!c->inbox.empty() && !c->closed) {
      auto frame = std::move(c->inbox.front());
      c->inbox.pop_front();
      try {
        co_await self->handle(c, frame);
      } catch (const std::exception& e) {
        webchat_log().error("frame handling failed: {}", e.what());
        c->send(error_frame("internal", "the server could not handle this frame"));
      }
    }
    c->draining = false;
  }

  asio::awaitable<void> handle(const std::shared_ptr<client>& c, const std::string& frame) {
    rapidjson::Document d;
    // Iterative: no recursion however deep a hostile frame nests. Invalid UTF-8 (also
    // through \u escapes) is refused.
    d.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag>(frame.data(),
                                                                                    frame.size());
    if (d.HasParseError() || !d.IsObject()) {
      c->send(error_frame("bad_json", "a frame is one JSON object"));
      co_return;
    }
    const auto* type = member(d, "type");
    if (type == nullptr || !type->IsString()) {
      c->send(error_frame("missing_field", "'type' is required"));
      co_return;
    }
    const std::string_view t(type->GetString(), type->GetStringLength());
    if (t == "join")
      co_await join(c, d);
    else if (t == "message")
      co_await message(c, d);
    else if (t == "ping")
      c->send(R"({"type":"pong"})");
    else
      c->send(error_frame("unknown_type", "unknown frame type; expected join, message or ping"));
  }

  // Reads a string member; sends the error frame and returns nullopt when it is absent or not a string.
  static std::optional<std::string> string_field(const client& c, const rapidjson::Value& d,
                                                 const char* name) {
    const auto* v = member(d, name);
    if (v == nullptr) {
      c.send(error_frame("missing_field", fmt::format("'{}' is required", name)));
      return std::nullopt;
    }
    if (!v->IsString()) {
      c.send(error_frame("bad_field_type", fmt::format("'{}' must be a string", name)));
      return std::nullopt;
    }
    return std::string(v->GetString(), v->GetStringLength());
  }

  asio::awaitable<void> join(const std::shared_ptr<client>& c, const rapidjson::Document& d) {
    auto room = string_field(*c, d, "room");
    if (!room) co_return;
    // Signed in, the session says who this is: a user_id or name in the frame is ignored.
    std::optional<std::string> user_id, raw_name;
    if (!c->identity) {
      user_id = string_field(*c, d, "user_id");
      if (!user_id) co_return;
      raw_name = string_field(*c, d, "name");
      if (!raw_name) co_return;
    }
    if (!valid_room_id(*room, settings.max_room_bytes)) {
      c->send(error_frame("bad_room", fmt::format("room names are 1-{} characters of a-z, 0-9, '-' and '_'",
                                                  settings.max_room_bytes)));
      co_return;
    }
    std::optional<std::string> name;
    if (c->identity) {
      if (!c->identity->may_use_room(*room)) {
        c->send(error_frame("forbidden_room",
                            fmt::format("your invite is for the rooms {}", join_rooms(c->identity->rooms))));
        co_return;
      }
      user_id = c->identity->user_id;
      name = c->identity->name;
    } else {
      if (!valid_webchat_user_id(*user_id)) {
        c->send(error_frame("bad_user_id", "user ids are 8-64 characters of A-Z, a-z, 0-9, '-' and '_'"));
        co_return;
      }
      name = normalized_display_name(*raw_name, settings.max_name_bytes);
      if (!name) {
        c->send(error_frame("bad_name", fmt::format("names are 1-{} bytes without control characters",
                                                    settings.max_name_bytes)));
        co_return;
      }
      if (iequals(*name, settings.bot_name)) {
        c->send(error_frame("reserved_name", "that is the bot's name; pick another"));
        co_return;
      }
    }
    if (c->closed) co_return;
    redis::request presence;
    if (!c->room.empty())
      presence.push("ZREM", webchat_members_key(c->room), presence_member(c->user_id, c->connection_id));
    leave(c, false);
    c->room = *room;
    c->user_id = *user_id;
    c->name = *name;
    rooms[c->room].insert(c);  // before reading the history: nothing published from now on is missed
    for (const auto& cmd : presence_commands(*c)) presence.push_range(cmd);
    // Awaited, so this connection's next message counts it (a lost write is redone by the refresh).
    auto present = co_await conn.exec(std::move(presence));
    if (!present) webchat_log().debug("presence not recorded: {}", present.error().message());
    if (c->closed) co_return;
    c->send(fmt::format(R"({{"type":"joined","room":{},"user_id":{},"name":{}}})", json::quoted(c->room),
                        json::quoted(c->user_id), json::quoted(c->name)));
    const auto joined_room = c->room;
    auto history = co_await history_frame(joined_room);
    if (c->room != joined_room) co_return;  // switched rooms meanwhile
    if (!history) {
      c->send(error_frame("unavailable", "the history could not be read; try again"));
      co_return;
    }
    c->send(std::move(*history));
  }

  // {"type":"history","room":...,"messages":[...]} oldest first; files whose data expired
  // are shown as text.
  asio::awaitable<std::optional<std::string>> history_frame(const std::string& room) {
    auto recent = co_await cache.recent(platform_name, room, settings.history_messages);
    if (!recent) co_return std::nullopt;
    auto& messages = *recent;
    std::reverse(messages.begin(), messages.end());
    std::vector<std::size_t> files;
    redis::request lookup;
    for (std::size_t i = 0; i < messages.size(); ++i) {
      if (messages[i].is_bot && messages[i].text.starts_with(file_marker) &&
          is_hex32(messages[i].message_id)) {
        files.push_back(i);
        lookup.push("HMGET", webchat_file_key(messages[i].message_id), "filename", "mimetype", "size");
      }
    }
    std::unordered_map<std::size_t, file_info> found;
    if (!files.empty()) {
      auto r = co_await conn.exec(std::move(lookup));
      if (!r) co_return std::nullopt;
      for (std::size_t k = 0; k < files.size(); ++k) {
        const auto& f = (*r)[k].elements();
        if (f.size() == 3 && f[0].is_bulk())
          found[files[k]] =
              file_info{f[0].str(), f[1].str(), static_cast<std::size_t>(std::atoll(f[2].str().c_str()))};
      }
    }
    std::string out = R"({"type":"history","room":)" + json::quoted(room) + R"(,"messages":[)";
    for (std::size_t i = 0; i < messages.size(); ++i) {
      if (i > 0) out.push_back(',');
      const auto f = found.find(i);
      out += f == found.end() ? message_frame(room, messages[i]) : file_frame(room, messages[i], f->second);
    }
    out += "]}";
    co_return out;
  }

  bool take_token(client& c) {
    if (settings.messages_per_second <= 0) return true;
    const auto now = clock_type::now();
    const double elapsed = std::chrono::duration<double>(now - c.refilled).count();
    c.refilled = now;
    c.tokens = std::min(settings.message_burst, c.tokens + elapsed * settings.messages_per_second);
    if (c.tokens < 1.0) return false;
    c.tokens -= 1.0;
    return true;
  }

  asio::awaitable<void> message(const std::shared_ptr<client>& c, const rapidjson::Document& d) {
    if (c->room.empty()) {
      c->send(error_frame("not_joined", "send a join frame first"));
      co_return;
    }
    auto text = string_field(*c, d, "text");
    if (!text) co_return;
    if (text->size() > settings.max_text_bytes) {
      c->send(error_frame("text_too_long",
                          fmt::format("messages are at most {} bytes", settings.max_text_bytes)));
      co_return;
    }
    if (text->find_first_not_of(" \t\r\n") == std::string::npos) {
      c->send(error_frame("empty_message", "the message is empty"));
      co_return;
    }
    if (!take_token(*c)) {
      c->send(error_frame("rate_limited", "too many messages; wait a moment"));
      co_return;
    }

    bus::inbound_envelope e;
    e.platform = "webchat";
    e.channel_id = c->room;
    e.room_name = c->room;
    e.user_id = c->user_id;
    e.username = c->name;
    // An invite's admin flag: the gateway vouches for it, the browser cannot claim it.
    if (c->identity && c->identity->admin) e.member_roles.emplace_back(bus::platform_admin_role);
    e.content = std::move(*text);
    e.timestamp = now_unix();
    e.message_id = bus::random_hex_id();
    e.trace_id = bus::random_hex_id();
    e.response_nonce = bus::random_hex_id();  // names the turn: its turn_complete ends the typing indicator
    e.cached = true;                          // stored below, with the room's fan-out
    const cached_message m{e.message_id, e.user_id, e.username, e.content, e.timestamp, false, {}};
    const auto channel = webchat_room_channel(c->room);

    // The message enters the history and reaches the room, and the turn's typing
    // indicator starts, before the bot can answer it (so its end cannot overtake its start).
    // The room's members are read in the same transaction (the first reply in EXEC's array).
    redis::request req;
    req.push("MULTI");
    req.push("ZRANGEBYSCORE", webchat_members_key(c->room), presence_cutoff(), "+inf");
    for (const auto& cmd : message_cache::store_commands(conn, platform_name, c->room, m)) req.push_range(cmd);
    req.push("PUBLISH", channel, message_frame(c->room, m));
    req.push("PUBLISH", channel, typing_frame(c->room, settings.bot_name, true, e.response_nonce));
    req.push("EXEC");
    auto stored = co_await conn.exec(std::move(req));
    if (!stored || !stored->back().is_array() || stored->back().elements().empty()) {
      c->send(error_frame("unavailable", "the message could not be stored; try again"));
      co_return;
    }
    std::vector<std::string> members;
    for (const auto& member : stored->back().elements()[0].elements()) members.push_back(member.str());
    e.is_dm = humans_present(members, e.user_id) <= 1;  // one human: a direct conversation
    e.is_addressed = e.is_dm || webchat_addressed(e.content, settings.bot_name, settings.bot_user_id);
    auto published = co_await bus.publish_inbound(e);
    if (!published) {
      webchat_log().log(log::level::warn, {{"trace_id", e.trace_id}}, "inbound message not published: {}",
                        published.error().message());
      co_await conn.command("PUBLISH", channel,
                            typing_frame(c->room, settings.bot_name, false, e.response_nonce));
      c->send(error_frame("unavailable", "the bot did not receive the message; try again"));
      co_return;
    }
    webchat_log().log(log::level::debug, {{"trace_id", e.trace_id}}, "message {} in room {} published as {}",
                      e.message_id, e.channel_id, *published);
  }

  // ---- fan-out ---------------------------------------------------------------------------

  void on_pubsub(redis::pubsub_message&& m) {
    if (m.channel == webchat_revoked_channel) {
      close_session(m.payload);
      return;
    }
    if (!m.channel.starts_with(room_prefix)) return;
    const auto it = rooms.find(m.channel.substr(room_prefix.size()));
    if (it == rooms.end()) return;
    for (const auto& c : it->second) c->send(m.payload);
  }

  // PUBLISH to the room after `commands`, in one MULTI.
  asio::awaitable<std::error_code> emit(const std::string& room, const std::string& frame,
                                        const std::vector<std::vector<std::string>>& commands) {
    redis::request req;
    req.push("MULTI");
    for (const auto& cmd : commands) req.push_range(cmd);
    req.push("PUBLISH", webchat_room_channel(room), frame);
    req.push("EXEC");
    auto r = co_await conn.exec(std::move(req));
    if (!r) co_return r.error();
    if (!r->back().is_array()) co_return make_error_code(errc::redis_error);
    co_return std::error_code{};
  }

  asio::awaitable<result<std::string>> send_text(const std::string& room, const std::string& frame_text,
                                                 const std::string& cache_text, const send_context& ctx,
                                                 const std::string& buttons_json) {
    const cached_message m{
        bus::random_hex_id(), settings.bot_user_id, settings.bot_name, cache_text, now_unix(), true, {}};
    auto frame = message_frame(
        room, cached_message{m.message_id, m.user_id, m.user_name, frame_text, m.timestamp, true, {}});
    if (!buttons_json.empty()) {
      frame.pop_back();
      frame += R"(,"buttons":)" + buttons_json + "}";
    }
    const auto commands = message_cache::store_commands(conn, platform_name, room, m, ctx.message_key);
    const auto ec = co_await emit(room, frame, commands);
    if (ec) co_return ec;
    co_return m.message_id;
  }

  // ---- files -----------------------------------------------------------------------------

  asio::awaitable<response> download(request& req) {
    const std::string file_id(req.path_param("file_id")), filename(req.path_param("filename"));
    // With sign-in a file is for the signed-in members of its room, not for whoever has the link.
    std::optional<webchat_identity> who;
    if (invite_only()) {
      auto signed_in = co_await session_of(req);
      if (auto* refused = std::get_if<response>(&signed_in)) co_return std::move(*refused);
      who = std::get<webchat_identity>(std::move(signed_in));
    }
    if (!is_hex32(file_id)) co_return response::error(404, "file_not_found", "no such file");
    auto r = co_await conn.command("HMGET", webchat_file_key(file_id), "data", "filename", "mimetype", "channel_id");
    if (!r) co_return response::error(503, "unavailable", "storage unavailable, retry later");
    const auto& f = r->elements();
    if (f.size() != 4 || !f[0].is_bulk() || f[1].str() != filename || (who && !who->may_use_room(f[3].str())))
      co_return response::error(404, "file_not_found", "no such file (files expire after 24 h)");
    const auto& type = f[2].str();
    auto res = response::text(200, f[0].str(), safe_mimetype(type) ? type : "application/octet-stream");
    std::string ascii;
    for (unsigned char ch : filename) ascii.push_back(ch < 0x80 ? static_cast<char>(ch) : '_');
    // Always a download, never rendered on the page's origin (an HTML or SVG file could script it).
    res.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + ascii +
                                                        "\"; filename*=UTF-8''" + percent_encode(filename));
    res.headers.emplace_back("X-Content-Type-Options", "nosniff");
    res.headers.emplace_back("Content-Security-Policy", "sandbox");
    res.headers.emplace_back("Cache-Control", "private, max-age=3600");
    co_return res;
  }

  // ---- sign-in ---------------------------------------------------------------------------

  // The session of the request's cookie, or the 401/503 to answer instead.
  asio::awaitable<std::variant<webchat_identity, response>> session_of(const request& req) {
    const auto cookie = req.cookie(webchat_session_cookie);
    if (!cookie || cookie->empty())
      co_return response::error(401, "no_session", "not signed in: open your invite link to sign in");
    std::string token(*cookie);
    auto found = co_await auth.session(std::move(token));
    if (!found) co_return response::error(503, "unavailable", "storage unavailable, retry later");
    if (!*found)
      co_return response::error(401, "session_expired",
                                "your session expired or was revoked: ask for a new invite link");
    co_return std::move(**found);
  }

  // The WebSocket handshake with sign-in: the session goes to open() in the request's context.
  asio::awaitable<std::optional<response>> authorize_socket(request& req) {
    auto signed_in = co_await session_of(req);
    if (auto* refused = std::get_if<response>(&signed_in)) co_return std::move(*refused);
    req.context = std::get<webchat_identity>(std::move(signed_in));
    co_return std::nullopt;
  }

  std::optional<response> foreign_origin(const request& req) const {
    if (webchat_origin_allowed(req.header("origin"), req.header("host"), settings.allowed_origins))
      return std::nullopt;
    return response::error(403, "forbidden_origin", "this origin may not sign in to the web chat");
  }

  bool secure_cookies(const request& req) const { return webchat_request_is_https(req, settings.public_url); }

  // GET /webchat/session: who this browser is. Not signed in is an answer, not an error:
  // the page asks before it connects.
  asio::awaitable<response> who_am_i(request& req) {
    if (!invite_only()) co_return private_json(200, R"({"auth":"none","signed_in":false})");
    auto signed_in = co_await session_of(req);
    if (auto* refused = std::get_if<response>(&signed_in)) {
      if (refused->status == 503) co_return std::move(*refused);
      const bool had_cookie = req.cookie(webchat_session_cookie).has_value();
      auto res = private_json(
          200, fmt::format(R"({{"auth":"invite","signed_in":false,"code":{},"message":{}}})",
                           json::quoted(had_cookie ? "session_expired" : "no_session"),
                           json::quoted(had_cookie ? "your session expired or was revoked: ask for a new invite link"
                                                   : "sign in with the invite link you were given")));
      if (had_cookie) res.headers.emplace_back("Set-Cookie", webchat_cleared_cookie_header(secure_cookies(req)));
      co_return res;
    }
    const auto& who = std::get<webchat_identity>(signed_in);
    co_return private_json(200, R"({"auth":"invite","signed_in":true,"session":)" + identity_json(who) + "}");
  }

  // POST /webchat/session {"invite": token}: the page trades its link's token for the cookie.
  asio::awaitable<response> sign_in(request& req) {
    if (!invite_only())
      co_return response::error(409, "signin_disabled", "this web chat has no sign-in (--webchat-auth none)");
    if (auto refused = foreign_origin(req)) co_return std::move(*refused);
    auto parsed = http::parse_json_object(req);
    if (auto* err = std::get_if<response>(&parsed)) co_return std::move(*err);
    const auto& body = std::get<rapidjson::Document>(parsed);
    const auto* token = member(body, "invite");
    if (token == nullptr) co_return bad_request("missing_field", "'invite' is required: the token of the invite link");
    if (!token->IsString()) co_return bad_request("bad_field_type", "'invite' must be a string");
    std::string invite_token(token->GetString(), token->GetStringLength());
    auto r = co_await auth.redeem(std::move(invite_token), settings.session_ttl);
    if (!r) co_return response::error(503, "unavailable", "storage unavailable, retry later");
    using refusal = webchat_auth_store::redeem_refusal;
    switch (r->refusal) {
      case refusal::unknown:
        co_return response::error(404, "invite_unknown",
                                  "this sign-in link is not valid (cut short, or expired long ago): ask for a new one");
      case refusal::used:
        co_return response::error(410, "invite_used", "this sign-in link was already used (each works once): "
                                                      "ask for a new one");
      case refusal::revoked:
        co_return response::error(410, "invite_revoked", "this sign-in link was revoked: ask for a new one");
      case refusal::expired:
        co_return response::error(410, "invite_expired", "this sign-in link expired: ask for a new one");
      case refusal::none:
        break;
    }
    webchat_log().info("{} signed in (session {}, invite {})", r->identity.name, r->identity.session_id,
                       r->identity.invite_id);
    auto res = private_json(201, R"({"auth":"invite","signed_in":true,"session":)" + identity_json(r->identity) + "}");
    res.headers.emplace_back("Set-Cookie",
                             webchat_session_cookie_header(r->token, settings.session_ttl, secure_cookies(req)));
    co_return res;
  }

  // DELETE /webchat/session: signs this browser out (its sockets on every gateway close).
  asio::awaitable<response> sign_out(request& req) {
    if (!invite_only())
      co_return response::error(409, "signin_disabled", "this web chat has no sign-in (--webchat-auth none)");
    if (auto refused = foreign_origin(req)) co_return std::move(*refused);
    bool ended = false;
    auto signed_in = co_await session_of(req);
    if (auto* refused = std::get_if<response>(&signed_in); refused && refused->status == 503)
      co_return std::move(*refused);
    if (auto* who = std::get_if<webchat_identity>(&signed_in)) {
      const auto ec = co_await auth.end_session(who->session_digest);
      if (ec) co_return response::error(503, "unavailable", "storage unavailable, retry later");
      ended = true;
    }
    auto res = private_json(200, fmt::format(R"({{"signed_out":{}}})", ended ? "true" : "false"));
    res.headers.emplace_back("Set-Cookie", webchat_cleared_cookie_header(secure_cookies(req)));
    co_return res;
  }

  // ---- invites and sessions (admin key) ---------------------------------------------------

  std::optional<response> refuse_non_admin(const request& req) const {
    const auto key = req.bearer_token();
    if (key.empty()) return response::error(401, "unauthorized", "missing 'Authorization: Bearer <admin key>'");
    if (key.size() > 256) return response::error(401, "unauthorized", "invalid API key");
    if (settings.admin_key_sha256.empty())
      return response::error(403, "forbidden", "the admin API is disabled: no admin key is configured");
    if (!digest_equals(sha256_hex(key), settings.admin_key_sha256))
      return response::error(403, "forbidden", "this route needs the admin key");
    return std::nullopt;
  }

  asio::awaitable<response> create_invite(request& req) {
    if (auto refused = refuse_non_admin(req)) co_return std::move(*refused);
    auto parsed = http::parse_json_object(req);
    if (auto* err = std::get_if<response>(&parsed)) co_return std::move(*err);
    auto checked = parse_invite_body(std::get<rapidjson::Document>(parsed), settings);
    if (auto* err = std::get_if<response>(&checked)) co_return std::move(*err);
    const auto& wanted = std::get<webchat_auth_store::invite_request>(checked);
    auto r = co_await auth.create_invite(wanted);
    if (!r) co_return response::error(503, "unavailable", "storage unavailable, retry later");
    // The token travels in the fragment: browsers never send it to a server or a proxy log,
    // and link previews that fetch the page do not use it up.
    const auto link = webchat_link_base(req, settings.public_url) + "/webchat/signin#" + r->token;
    auto out = invite_json(r->invite);
    out.pop_back();
    out += R"(,"token":)" + json::quoted(r->token) + R"(,"link":)" + json::quoted(link) + "}";
    webchat_log().info("invite {} created for {}", r->invite.invite_id, r->invite.name);
    co_return private_json(201, std::move(out));
  }

  asio::awaitable<response> list_invites(request& req) {
    if (auto refused = refuse_non_admin(req)) co_return std::move(*refused);
    auto r = co_await auth.list_invites();
    if (!r) co_return response::error(503, "unavailable", "storage unavailable, retry later");
    std::string out = R"({"invites":[)";
    for (std::size_t i = 0; i < r->size(); ++i) out += (i ? "," : "") + invite_json((*r)[i]);
    co_return private_json(200, out + "]}");
  }

  asio::awaitable<response> revoke_invite(request& req) {
    if (auto refused = refuse_non_admin(req)) co_return std::move(*refused);
    const std::string id(req.path_param("invite_id"));
    if (!valid_webchat_public_id(id)) co_return bad_request("bad_invite_id", "invite ids are 16 hex digits");
    auto r = co_await auth.revoke_invite(id);
    if (!r) co_return response::error(503, "unavailable", "storage unavailable, retry later");
    if (!*r) co_return response::error(404, "invite_not_found", "no invite '" + id + "'");
    co_return private_json(200, R"({"revoked":true,"invite":)" + invite_json(**r) + "}");
  }

  asio::awaitable<response> list_sessions(request& req) {
    if (auto refused = refuse_non_admin(req)) co_return std::move(*refused);
    auto r = co_await auth.list_sessions();
    if (!r) co_return response::error(503, "unavailable", "storage unavailable, retry later");
    std::string out = R"({"sessions":[)";
    for (std::size_t i = 0; i < r->size(); ++i) out += (i ? "," : "") + identity_json((*r)[i]);
    co_return private_json(200, out + "]}");
  }

  asio::awaitable<response> revoke_session(request& req) {
    if (auto refused = refuse_non_admin(req)) co_return std::move(*refused);
    const std::string id(req.path_param("session_id"));
    if (!valid_webchat_public_id(id)) co_return bad_request("bad_session_id", "session ids are 16 hex digits");
    auto r = co_await auth.revoke_session(id);
    if (!r) co_return response::error(503, "unavailable", "storage unavailable, retry later");
    if (!*r) co_return response::error(404, "session_not_found", "no session '" + id + "'");
    webchat_log().info("session {} of {} revoked", (*r)->session_id, (*r)->name);
    co_return private_json(200, R"({"revoked":true,"session":)" + identity_json(**r) + "}");
  }

  // DELETE /webchat/users/{name}: every session and pending invite of that name.
  asio::awaitable<response> revoke_name(request& req) {
    if (auto refused = refuse_non_admin(req)) co_return std::move(*refused);
    const std::string name(req.path_param("name"));
    if (name.size() > settings.invite_limits.max_name_bytes)
      co_return bad_request("bad_name", fmt::format("names are at most {} bytes", settings.invite_limits.max_name_bytes));
    auto r = co_await auth.revoke_name(name);
    if (!r) co_return response::error(503, "unavailable", "storage unavailable, retry later");
    if (r->sessions == 0 && r->invites == 0)
      co_return response::error(404, "name_not_found", "no session or pending invite of '" + name + "'");
    webchat_log().info("{} revoked: {} sessions, {} invites", name, r->sessions, r->invites);
    co_return private_json(200, fmt::format(R"({{"revoked":true,"name":{},"sessions":{},"invites":{}}})",
                                            json::quoted(name), r->sessions, r->invites));
  }
};

// ---------------------------------------------------------------------------------------
// The adapter

webchat_platform::webchat_platform(redis::connection& conn, bus::event_bus& bus, redis::subscriber& fanout,
                                   webchat_settings settings)
    : impl_(std::make_shared<impl>(conn, bus, fanout, std::move(settings))) {
  fanout.set_handler([raw = impl_.get()](redis::pubsub_message&& m) { raw->on_pubsub(std::move(m)); });
}

webchat_platform::~webchat_platform() {
  impl_->sub.set_handler(nullptr);
  for (const auto& c : impl_->clients) {
    if (auto s = c->ws.lock()) {
      s->on_message = nullptr;
      s->on_closed = nullptr;
    }
  }
}

std::size_t webchat_platform::connections() const {
  return impl_->clients.size();
}
bool webchat_platform::is_running() const {
  return impl_->running;
}
bot_identity webchat_platform::identity() const {
  return {impl_->settings.bot_user_id, impl_->settings.bot_name};
}

namespace {

response asset(std::string_view body, const char* type) {
  auto res = response::text(200, std::string(body), type);
  res.headers.emplace_back("X-Content-Type-Options", "nosniff");
  res.headers.emplace_back("Cache-Control", "no-cache");
  return res;
}

}  // namespace

void webchat_platform::add_routes(http::router& routes, http::http_server& server) {
  auto self = impl_;
  const auto page = http::sync_handler([](request&) {
    auto res = asset(webchat_assets::index_html(), "text/html; charset=utf-8");
    res.headers.emplace_back("Content-Security-Policy",
                             "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                             "connect-src 'self'; base-uri 'none'; form-action 'none'; "
                             "frame-ancestors 'none'");
    res.headers.emplace_back("Referrer-Policy", "no-referrer");
    return res;
  });
  routes.add(http::method::get, "/", page);
  // Invite links open the page here; the token stays in the fragment, which the page reads.
  routes.add(http::method::get, "/webchat/signin", page);
  // Before /webchat/{asset}, which would match these paths too (the first match wins).
  using member_handler = asio::awaitable<response> (impl::*)(request&);
  const auto add = [&](http::method verb, const char* pattern, member_handler fn) {
    routes.add(verb, pattern, http::handler([self, fn](request& req) { return ((*self).*fn)(req); }));
  };
  add(http::method::get, "/webchat/session", &impl::who_am_i);
  add(http::method::post, "/webchat/session", &impl::sign_in);
  add(http::method::delete_, "/webchat/session", &impl::sign_out);
  add(http::method::post, "/webchat/invites", &impl::create_invite);
  add(http::method::get, "/webchat/invites", &impl::list_invites);
  add(http::method::delete_, "/webchat/invites/{invite_id}", &impl::revoke_invite);
  add(http::method::get, "/webchat/sessions", &impl::list_sessions);
  add(http::method::delete_, "/webchat/sessions/{session_id}", &impl::revoke_session);
  add(http::method::delete_, "/webchat/users/{name}", &impl::revoke_name);
  routes.add(http::method::get, "/webchat/{asset}", http::sync_handler([](request& req) {
               const auto name = req.path_param("asset");
               if (name == "app.js") return asset(webchat_assets::app_js(), "text/javascript; charset=utf-8");
               if (name == "style.css") return asset(webchat_assets::style_css(), "text/css; charset=utf-8");
               if (name == "icon.svg") return asset(webchat_assets::icon_svg(), "image/svg+xml");
               return response::error(404, "not_found", "no such file");
             }));
  routes.add(http::method::get, "/webchat/files/{file_id}/{filename}",
             http::handler([self](request& req) { return self->download(req); }));
  http::websocket_route socket{
      [self](request& req) -> std::optional<response> {
        if (!self->running) return response::error(503, "unavailable", "the web chat is not running");
        if (webchat_origin_allowed(req.header("origin"), req.header("host"), self->settings.allowed_origins))
          return std::nullopt;
        return response::error(403, "forbidden_origin",
                               "this origin may not open the web chat (see --webchat-allowed-origins)");
      },
      [self](std::shared_ptr<http::websocket_session> ws) { self->open(ws); }};
  // With sign-in the handshake also needs a live session (401 with a JSON body otherwise).
  if (self->invite_only()) socket.authorize_async = [self](request& req) { return self->authorize_socket(req); };
  server.add_websocket("/webchat/ws", std::move(socket));
}

task<void> webchat_platform::start() {
  impl_->running = true;
  spawn(impl_->conn.get_executor(), impl::refresh_presence(impl_), "webchat");
  const std::vector<std::string> patterns{std::string(room_prefix) + "*"};
  // Recorded at once and (re)subscribed on every connect: start does not wait for Redis.
  // (The executor is taken first: GCC 12 destroys a temporary twice when co_await shares a
  // full-expression with it.)
  const auto executor = co_await asio::this_coro::executor;
  spawn(executor, [impl = impl_, patterns]() -> asio::awaitable<void> {
    if (const auto ec = co_await impl->sub.psubscribe(patterns))
      webchat_log().debug("room subscription not confirmed yet: {}", ec.message());
    if (!impl->invite_only()) co_return;
    std::vector<std::string> revocations{std::string(webchat_revoked_channel)};
    if (const auto ec = co_await impl->sub.subscribe(std::move(revocations)))
      webchat_log().debug("revocation subscription not confirmed yet: {}", ec.message());
  }, "webchat");
  if (impl_->invite_only()) spawn(impl_->conn.get_executor(), impl::check_sessions(impl_), "webchat");
}

task<void> webchat_platform::stop() {
  impl_->running = false;
  impl_->presence_timer.cancel();
  impl_->session_timer.cancel();
  const auto clients = impl_->clients;  // closing calls back into leave()
  for (const auto& c : clients)
    if (auto s = c->ws.lock()) s->close();
  co_return;
}

task<result<std::string>> webchat_platform::send(const std::string& channel_id, const std::string& text,
                                                 const send_context& ctx) {
  const std::string no_buttons;
  co_return co_await impl_->send_text(channel_id, text, text, ctx, no_buttons);
}

task<result<std::string>> webchat_platform::send_with_buttons(const std::string& channel_id,
                                                              const std::string& text,
                                                              const std::vector<bus::button>& buttons,
                                                              const send_context& ctx) {
  std::string cache_text = text;
  std::string list = "[";
  for (const auto& b : buttons) {
    cache_text += "\n[" + b.label + "]";
    if (list.size() > 1) list.push_back(',');
    list += fmt::format(R"({{"label":{},"id":{},"url":{}}})", json::quoted(b.label), json::quoted(b.id),
                        json::quoted(b.url));
  }
  list += "]";
  co_return co_await impl_->send_text(channel_id, text, cache_text, ctx, list);
}

task<result<std::string>> webchat_platform::send_file(const std::string& channel_id, const std::string& data,
                                                      const std::string& filename,
                                                      const std::string& mimetype, const send_context& ctx) {
  auto& s = impl_->settings;
  const auto file_id = bus::random_hex_id();  // 128 random bits: the URL is the capability
  const file_info f{safe_filename(filename), safe_mimetype(mimetype) ? mimetype : "application/octet-stream",
                    data.size()};
  const cached_message m{file_id,    s.bot_user_id, s.bot_name, std::string(file_marker) + f.filename,
                         now_unix(), true,          {}};
  auto commands = message_cache::store_commands(impl_->conn, platform_name, channel_id, m, ctx.message_key);
  commands.push_back({"HSET", webchat_file_key(file_id), "data", data, "filename", f.filename, "mimetype",
                      f.mimetype, "size", std::to_string(f.size), "timestamp",
                      fmt::format("{:.3f}", m.timestamp), "channel_id", channel_id});
  commands.push_back({"EXPIRE", webchat_file_key(file_id), std::to_string(s.file_ttl.count())});
  const auto frame = file_frame(channel_id, m, f);
  const auto ec = co_await impl_->emit(channel_id, frame, commands);
  if (ec) co_return ec;
  co_return file_id;
}

// Typing frames are best effort: a lost one is corrected by the next, or by the page's timeout.
task<void> webchat_platform::start_typing(const std::string& channel_id) {
  const auto frame = typing_frame(channel_id, impl_->settings.bot_name, true, "");
  const std::vector<std::vector<std::string>> none;
  co_await impl_->emit(channel_id, frame, none);
}

task<void> webchat_platform::stop_typing(const std::string& channel_id) {
  const auto frame = typing_frame(channel_id, impl_->settings.bot_name, false, "");
  const std::vector<std::vector<std::string>> none;
  co_await impl_->emit(channel_id, frame, none);
}

task<void> webchat_platform::turn_complete(const std::string& channel_id, const std::string& response_nonce) {
  const auto frame = typing_frame(channel_id, impl_->settings.bot_name, false, response_nonce);
  const std::vector<std::vector<std::string>> none;
  const auto ec = co_await impl_->emit(channel_id, frame, none);
  if (ec) webchat_log().warn("turn_complete for room {} not published: {}", channel_id, ec.message());
}

task<bool> webchat_platform::is_channel_valid(const std::string& channel_id) {
  co_return valid_room_id(channel_id, impl_->settings.max_room_bytes);
}

}  // namespace stargazer::platform
