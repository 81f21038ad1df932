#include "stargazer/platform/matrix/sync_events.hpp"

#include "stargazer/core/digest.hpp"
#include "stargazer/core/json.hpp"
#include "stargazer/core/json_value.hpp"
#include "stargazer/core/strings.hpp"
#include "stargazer/core/utf8.hpp"

#include <fmt/format.h>
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <set>
#include <utility>

namespace stargazer::platform::matrix {

namespace {

using value = rapidjson::Value;

// ---- reading values ----------------------------------------------------------------------

// The member `name` of `obj`; nullptr when `obj` is not an object, or the member is absent or null.
const value* member(const value& obj, const char* name) {
  if (!obj.IsObject()) return nullptr;
  const auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || it->value.IsNull()) return nullptr;
  return &it->value;
}

std::string_view view_of(const value& v) { return {v.GetString(), v.GetStringLength()}; }

// The string at `v` when it is a valid UTF-8 string, else nullopt (absent, another type).
std::optional<std::string> string_at(const value* v) {
  if (v == nullptr || !v->IsString() || !utf8::is_valid(view_of(*v))) return std::nullopt;
  return std::string(view_of(*v));
}

// An optional string member: "" when absent or unusable.
std::string optional_string(const value& obj, const char* name) { return string_at(member(obj, name)).value_or(""); }

// A required string member, or `why` says what is wrong with it.
std::optional<std::string> required_string(const value& obj, const char* name, std::string& why) {
  const value* v = member(obj, name);
  if (v == nullptr) {
    why = fmt::format("no '{}'", name);
    return std::nullopt;
  }
  if (!v->IsString()) {
    why = fmt::format("'{}' is not a string", name);
    return std::nullopt;
  }
  if (!utf8::is_valid(view_of(*v))) {
    why = fmt::format("'{}' is not valid UTF-8", name);
    return std::nullopt;
  }
  return std::string(view_of(*v));
}

// An id: its sigil, then at least one character; at most 255 bytes (the spec's limit for
// user and room ids, applied to event ids too); no control characters.
bool plausible_id(std::string_view id, char sigil) {
  if (id.size() < 2 || id.size() > 255 || id.front() != sigil || !utf8::is_valid(id)) return false;
  return std::none_of(id.begin(), id.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

std::optional<std::string> required_id(const value& obj, const char* name, char sigil, std::string& why) {
  auto id = required_string(obj, name, why);
  if (id && !plausible_id(*id, sigil)) {
    why = fmt::format("'{}' is not a {} id", name, sigil == '@' ? "user" : sigil == '$' ? "event" : "room");
    return std::nullopt;
  }
  return id;
}

// An integer: a JSON integer, or (room versions 1-9 power levels) a string of one.
std::optional<std::int64_t> integer_at(const value* v, bool allow_string) {
  if (v == nullptr) return std::nullopt;
  if (v->IsInt64()) return v->GetInt64();
  if (allow_string && v->IsString()) {
    auto s = view_of(*v);
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    if (!s.empty() && s.front() == '+') s.remove_prefix(1);
    std::int64_t n = 0;
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (!s.empty() && ec == std::errc{} && ptr == s.data() + s.size()) return n;
  }
  return std::nullopt;
}

bool is_true(const value* v) { return v != nullptr && v->IsBool() && v->GetBool(); }

// Whether `v` nests deeper than `limit` levels (a scalar is level 0, `[]` and `{}` level 1,
// as json::nesting_depth counts). An explicit stack instead of recursion: an untrusted value
// of any depth is measured without growing the call stack, and no further than level
// limit + 1.
bool deeper_than(const value& v, unsigned limit) {
  if (!v.IsObject() && !v.IsArray()) return false;
  std::vector<std::pair<const value*, unsigned>> pending{{&v, 1u}};
  while (!pending.empty()) {
    const auto [at, depth] = pending.back();
    pending.pop_back();
    if (depth > limit) return true;
    const auto push = [&, depth = depth](const value& child) {
      if (child.IsObject() || child.IsArray()) pending.emplace_back(&child, depth + 1);
    };
    if (at->IsObject()) {
      for (const auto& m : at->GetObject()) push(m.value);
    } else {
      for (const auto& e : at->GetArray()) push(e);
    }
  }
  return false;
}

power_levels decode_power_levels(const value& content) {
  power_levels p;
  if (const auto d = integer_at(member(content, "users_default"), true)) p.users_default = *d;
  if (const value* users = member(content, "users"); users != nullptr && users->IsObject()) {
    for (const auto& m : users->GetObject()) {
      const auto level = integer_at(&m.value, true);
      const auto user = view_of(m.name);
      if (level && utf8::is_valid(user)) p.users.insert_or_assign(std::string(user), *level);
    }
  }
  return p;
}

// ---- events ------------------------------------------------------------------------------

struct room_context {
  std::string_view room_id;
  std::vector<skipped_item>* skipped;
  unsigned max_depth;  // sync_limits::max_depth
  void skip(const value& ev, std::string type, std::string reason) const {
    skipped->push_back({std::string(room_id), optional_string(ev, "event_id"), std::move(type), std::move(reason)});
  }
  // Whether the event `ev` (an object) nests deeper than max_depth; it is then skipped. Checked
  // before anything else reads its content, so nothing that might walk it (recursively) sees it.
  bool too_deep(const value& ev, const std::string& type) const {
    if (!deeper_than(ev, max_depth)) return false;
    skip(ev, type, fmt::format("the event nests deeper than {} levels", max_depth));
    return true;
  }
};

const char* const media_msgtypes[] = {"m.image", "m.file", "m.audio", "m.video"};

bool is_media(std::string_view msgtype) {
  return std::any_of(std::begin(media_msgtypes), std::end(media_msgtypes),
                     [&](const char* t) { return msgtype == t; });
}

// The fields every room event the bot acts on has; `why` says what is missing.
bool decode_common(const value& ev, std::string& event_id, std::string& sender, std::int64_t& ts, std::string& why) {
  auto id = required_id(ev, "event_id", '$', why);
  if (!id) return false;
  auto from = required_id(ev, "sender", '@', why);
  if (!from) return false;
  const value* t = member(ev, "origin_server_ts");
  if (t == nullptr) {
    why = "no 'origin_server_ts'";
    return false;
  }
  if (!t->IsInt64()) {
    why = "'origin_server_ts' is not an integer";
    return false;
  }
  event_id = std::move(*id);
  sender = std::move(*from);
  ts = t->GetInt64();
  return true;
}

bool redacted(const value& ev) {
  const value* u = member(ev, "unsigned");
  return u != nullptr && member(*u, "redacted_because") != nullptr;
}

std::optional<message_event> decode_message(const value& ev, std::string& why) {
  message_event m;
  if (!decode_common(ev, m.event_id, m.sender, m.origin_server_ts, why)) return std::nullopt;
  const value* content = member(ev, "content");
  if (content == nullptr || !content->IsObject()) {
    why = "no 'content' object";
    return std::nullopt;
  }
  if (redacted(ev)) {
    why = "redacted";
    return std::nullopt;
  }
  auto msgtype = required_string(*content, "msgtype", why);
  if (!msgtype) return std::nullopt;
  auto body = required_string(*content, "body", why);
  if (!body) return std::nullopt;
  m.msgtype = std::move(*msgtype);
  m.format = optional_string(*content, "format");
  m.formatted_body = optional_string(*content, "formatted_body");

  // Relations: a reply, a thread, an edit. A reply's body may start with the original
  // quoted (rich_replies.md); a thread's fallback reply carries no such quote.
  bool quoted_reply = false;
  if (const value* rel = member(*content, "m.relates_to"); rel != nullptr && rel->IsObject()) {
    const auto rel_type = optional_string(*rel, "rel_type");
    if (rel_type == "m.replace") {
      const value* fresh = member(*content, "m.new_content");
      if (fresh == nullptr || !fresh->IsObject()) {
        why = "an edit (m.replace) without an 'm.new_content' object";
        return std::nullopt;
      }
      edit_info edit;
      auto target = required_id(*rel, "event_id", '$', why);
      if (!target) {
        why = "an edit's m.relates_to: " + why;
        return std::nullopt;
      }
      auto new_body = required_string(*fresh, "body", why);
      if (!new_body) {
        why = "an edit's m.new_content: " + why;
        return std::nullopt;
      }
      edit.replaces_event_id = std::move(*target);
      edit.body = std::move(*new_body);
      edit.msgtype = optional_string(*fresh, "msgtype");
      edit.formatted_body = optional_string(*fresh, "formatted_body");
      m.edit = std::move(edit);
    } else if (rel_type == "m.thread") {
      if (auto root = string_at(member(*rel, "event_id")); root && plausible_id(*root, '$')) m.thread_root = *root;
    }
    if (const value* reply = member(*rel, "m.in_reply_to"); reply != nullptr) {
      const bool fallback = rel_type == "m.thread" && is_true(member(*rel, "is_falling_back"));
      quoted_reply = !fallback;
      auto target = string_at(member(*reply, "event_id"));
      if (!fallback && target && plausible_id(*target, '$')) m.reply_to = std::move(*target);
    }
  }
  if (quoted_reply) m.formatted_body = strip_reply_fallback_html(m.formatted_body);

  if (const value* mentions = member(*content, "m.mentions"); mentions != nullptr && mentions->IsObject()) {
    if (const value* ids = member(*mentions, "user_ids"); ids != nullptr && ids->IsArray())
      for (const auto& id : ids->GetArray())
        if (auto s = string_at(&id)) m.mentioned_user_ids.push_back(std::move(*s));
    m.mentions_room = is_true(member(*mentions, "room"));
  }

  if (is_media(m.msgtype)) {
    const value* url = member(*content, "url");
    if (url == nullptr) {
      why = member(*content, "file") != nullptr ? "an encrypted attachment (end-to-end encryption is not supported)"
                                                : "an attachment without 'url'";
      return std::nullopt;
    }
    auto uri = string_at(url);
    if (!uri || !parse_mxc(*uri)) {
      why = "'url' is not an mxc:// URI";
      return std::nullopt;
    }
    media_ref media;
    media.url = std::move(*uri);
    const auto filename = optional_string(*content, "filename");
    media.filename = filename.empty() ? *body : filename;
    // Since v1.10 `body` is a caption when `filename` is given and differs from it.
    if (!filename.empty() && filename != *body) m.body = std::move(*body);
    if (const value* info = member(*content, "info"); info != nullptr && info->IsObject()) {
      if (const auto size = integer_at(member(*info, "size"), false); size && *size >= 0) media.size = *size;
      media.mimetype = optional_string(*info, "mimetype");
    }
    m.media = std::move(media);
  } else {
    m.body = quoted_reply ? strip_reply_fallback(*body) : std::move(*body);
  }
  return m;
}

std::optional<reaction_event> decode_reaction(const value& ev, std::string& why) {
  reaction_event r;
  if (!decode_common(ev, r.event_id, r.sender, r.origin_server_ts, why)) return std::nullopt;
  const value* content = member(ev, "content");
  if (content == nullptr || !content->IsObject()) {
    why = "no 'content' object";
    return std::nullopt;
  }
  if (redacted(ev)) {
    why = "redacted";
    return std::nullopt;
  }
  const value* rel = member(*content, "m.relates_to");
  if (rel == nullptr || !rel->IsObject()) {
    why = "no 'm.relates_to' object";
    return std::nullopt;
  }
  if (optional_string(*rel, "rel_type") != "m.annotation") {
    why = "m.relates_to.rel_type is not m.annotation";
    return std::nullopt;
  }
  auto target = required_id(*rel, "event_id", '$', why);
  if (!target) {
    why = "m.relates_to: " + why;
    return std::nullopt;
  }
  auto key = required_string(*rel, "key", why);
  if (!key || key->empty()) {
    why = key ? "m.relates_to.key is empty" : "m.relates_to: " + why;
    return std::nullopt;
  }
  r.target_event_id = std::move(*target);
  r.key = std::move(*key);
  return r;
}

// A state event's state_key and content; `why` when either is missing.
bool state_parts(const value& ev, std::string& state_key, const value*& content, std::string& why) {
  auto key = required_string(ev, "state_key", why);
  if (!key) return false;
  content = member(ev, "content");
  if (content == nullptr || !content->IsObject()) {
    why = "no 'content' object";
    return false;
  }
  state_key = std::move(*key);
  return true;
}

// One event of a joined room's state, timeline or state_after. Only timeline events become
// messages and reactions.
void decode_room_event(const value& ev, bool in_timeline, joined_room& room, const room_context& ctx,
                       std::set<std::string, std::less<>>& seen) {
  if (!ev.IsObject()) {
    ctx.skipped->push_back({std::string(ctx.room_id), "", "", "an event that is not an object"});
    return;
  }
  std::string why;
  auto type = required_string(ev, "type", why);
  if (!type) return ctx.skip(ev, "", why);

  if (*type == "m.room.message" || *type == "m.reaction") {
    if (!in_timeline) return;  // not state; a server would not send it there
    if (ctx.too_deep(ev, *type)) return;
    std::optional<timeline_event> decoded;
    if (*type == "m.room.message") {
      if (auto m = decode_message(ev, why)) decoded = std::move(*m);
    } else if (auto r = decode_reaction(ev, why)) {
      decoded = std::move(*r);
    }
    if (!decoded) return ctx.skip(ev, *type, why);
    const auto& id = std::visit([](const auto& e) -> const std::string& { return e.event_id; }, *decoded);
    if (!seen.insert(id).second) return ctx.skip(ev, *type, "a repeated event_id");
    room.events.push_back(std::move(*decoded));
    return;
  }
  if (*type == "m.room.encrypted") {
    if (in_timeline) ctx.skip(ev, *type, "an encrypted event (end-to-end encryption is not supported)");
    return;
  }
  const bool wanted = *type == "m.room.member" || *type == "m.room.encryption" || *type == "m.room.name" ||
                      *type == "m.room.power_levels";
  if (!wanted) return;
  if (ctx.too_deep(ev, *type)) return;

  std::string state_key;
  const value* content = nullptr;
  if (!state_parts(ev, state_key, content, why)) return ctx.skip(ev, *type, why);
  if (*type == "m.room.member") {
    if (!plausible_id(state_key, '@')) return ctx.skip(ev, *type, "'state_key' is not a user id");
    auto membership = required_string(*content, "membership", why);
    if (!membership) return ctx.skip(ev, *type, "content: " + why);
    room.members.insert_or_assign(std::move(state_key),
                                  member_info{std::move(*membership), string_at(member(*content, "displayname"))});
    return;
  }
  if (!state_key.empty()) return;  // these three are defined with an empty state_key only
  if (*type == "m.room.encryption") {
    // Encryption cannot be turned off again: whatever the content, the room is encrypted.
    room.encrypted = true;
  } else if (*type == "m.room.name") {
    room.name = optional_string(*content, "name");
  } else {
    room.power = decode_power_levels(*content);
  }
}

// The array `obj`.`name`.events, or nullptr (a note in `skipped` when it has the wrong type).
const value* events_of(const value& obj, const char* name, const room_context& ctx) {
  const value* section = member(obj, name);
  if (section == nullptr) return nullptr;
  const value* events = member(*section, "events");
  if (!section->IsObject() || (events != nullptr && !events->IsArray())) {
    ctx.skipped->push_back({std::string(ctx.room_id), "", "", fmt::format("'{}' has the wrong type", name)});
    return nullptr;
  }
  return events;
}

joined_room decode_joined(std::string room_id, const value& r, std::vector<skipped_item>& skipped,
                          unsigned max_depth) {
  joined_room room;
  room.room_id = std::move(room_id);
  const room_context ctx{room.room_id, &skipped, max_depth};
  std::set<std::string, std::less<>> seen;
  if (const value* state = events_of(r, "state", ctx))
    for (const auto& ev : state->GetArray()) decode_room_event(ev, false, room, ctx, seen);
  if (const value* timeline = member(r, "timeline"); timeline != nullptr) {
    if (const value* events = events_of(r, "timeline", ctx))
      for (const auto& ev : events->GetArray()) decode_room_event(ev, true, room, ctx, seen);
    if (timeline->IsObject()) {
      room.limited = is_true(member(*timeline, "limited"));
      room.prev_batch = optional_string(*timeline, "prev_batch");
    }
  }
  if (const value* after = events_of(r, "state_after", ctx))
    for (const auto& ev : after->GetArray()) decode_room_event(ev, false, room, ctx, seen);
  if (const value* summary = member(r, "summary"); summary != nullptr && summary->IsObject()) {
    const auto count = integer_at(member(*summary, "m.joined_member_count"), false);
    if (count && *count >= 0) room.joined_member_count = *count;
  }
  return room;
}

invited_room decode_invited(std::string room_id, const value& r, std::string_view bot_user_id,
                            std::vector<skipped_item>& skipped, unsigned max_depth) {
  invited_room room;
  room.room_id = std::move(room_id);
  const room_context ctx{room.room_id, &skipped, max_depth};
  const value* events = events_of(r, "invite_state", ctx);
  if (events == nullptr) return room;
  for (const auto& ev : events->GetArray()) {
    if (!ev.IsObject()) {
      skipped.push_back({room.room_id, "", "", "an invite state event that is not an object"});
      continue;
    }
    std::string why;
    auto type = required_string(ev, "type", why);
    if (!type) {
      ctx.skip(ev, "", why);
      continue;
    }
    if (*type != "m.room.member" && *type != "m.room.encryption" && *type != "m.room.name") continue;
    if (ctx.too_deep(ev, *type)) continue;
    std::string state_key;
    const value* content = nullptr;
    if (!state_parts(ev, state_key, content, why)) {
      ctx.skip(ev, *type, why);
      continue;
    }
    if (*type == "m.room.member") {
      if (state_key != bot_user_id || optional_string(*content, "membership") != "invite") continue;
      auto sender = required_id(ev, "sender", '@', why);
      if (!sender) {
        ctx.skip(ev, *type, "the bot's invite: " + why);
        continue;
      }
      room.inviter = std::move(*sender);
      room.is_direct = is_true(member(*content, "is_direct"));
    } else if (!state_key.empty()) {
      continue;
    } else if (*type == "m.room.encryption") {
      room.encrypted = true;
    } else {
      room.name = optional_string(*content, "name");
    }
  }
  return room;
}

// The rooms of one section (rooms.join / invite / leave), each with a plausible room id,
// in the order given, each id once.
template <class F>
void for_each_room(const value& section, const char* name, std::vector<skipped_item>& skipped, F&& f) {
  std::set<std::string, std::less<>> seen;
  for (const auto& m : section.GetObject()) {
    const auto id = view_of(m.name);
    if (!plausible_id(id, '!')) {
      skipped.push_back({"", "", "", fmt::format("rooms.{}: a key that is not a room id", name)});
      continue;
    }
    if (!m.value.IsObject()) {
      skipped.push_back({std::string(id), "", "", fmt::format("rooms.{}: the room is not an object", name)});
      continue;
    }
    if (!seen.emplace(id).second) {
      skipped.push_back({std::string(id), "", "", fmt::format("rooms.{}: the room is listed twice", name)});
      continue;
    }
    f(std::string(id), m.value);
  }
}

// Whether `text` holds the user id `id` on its own: neither side touches a character a
// user id can hold ('.' or ':' after it only when it ends the sentence: "@bot:example.org."
// names the bot, "@bot:example.org.evil" and "@bot:example.org:8448" do not).
bool names_user_id(std::string_view text, std::string_view id) {
  if (id.empty()) return false;
  const auto id_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '=' || c == '-' || c == '/' || c == '+' || c == ':' || c == '[' || c == ']' || c == '@' ||
           static_cast<unsigned char>(c) >= 0x80;
  };
  for (auto at = text.find(id); at != std::string_view::npos; at = text.find(id, at + 1)) {
    if (at > 0 && id_char(text[at - 1])) continue;
    auto end = at + id.size();
    if (end < text.size() && (text[end] == '.' || text[end] == ':')) ++end;
    if (end < text.size() && id_char(text[end])) continue;
    return true;
  }
  return false;
}

// ---- glob ----------------------------------------------------------------------------------

// Iterative glob with one backtrack point: O(|text| * |pattern|) at worst.
bool glob_match(std::string_view pattern, std::string_view text) {
  std::size_t p = 0, t = 0;
  std::size_t star = std::string_view::npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || (pattern[p] != '*' && pattern[p] == text[t]))) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

}  // namespace

// ---- mxc ---------------------------------------------------------------------------------

std::optional<mxc_uri> parse_mxc(std::string_view uri) {
  static constexpr std::string_view scheme = "mxc://";
  if (uri.substr(0, scheme.size()) != scheme) return std::nullopt;
  uri.remove_prefix(scheme.size());
  const auto slash = uri.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == uri.size()) return std::nullopt;
  const auto server = uri.substr(0, slash);
  const auto media = uri.substr(slash + 1);
  const auto ascii_alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  const bool server_ok = std::all_of(server.begin(), server.end(), [&](char c) {
    return ascii_alnum(c) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']';
  });
  const bool media_ok =
      std::all_of(media.begin(), media.end(), [&](char c) { return ascii_alnum(c) || c == '_' || c == '-'; });
  if (!server_ok || !media_ok || server.size() > 255 || media.size() > 255) return std::nullopt;
  return mxc_uri{std::string(server), std::string(media)};
}

// ---- decoding ----------------------------------------------------------------------------

std::variant<sync_batch, std::string> decode_sync(std::string_view body, std::string_view bot_user_id,
                                                  const sync_limits& limits) {
  if (body.size() > limits.max_bytes)
    return fmt::format("a /sync response of {} bytes (limit {})", body.size(), limits.max_bytes);
  // Only against absurd input: the iterative parser keeps its stack on the heap (bounded by
  // max_bytes), the Document frees its values without walking them (a memory pool), and
  // nothing below walks a value recursively. Events are held to limits.max_depth one by one.
  if (json::nesting_depth(body) > limits.max_body_depth)
    return fmt::format("the /sync response nests deeper than {} levels", limits.max_body_depth);
  rapidjson::Document doc;  // MemoryPoolAllocator: no recursive destruction
  doc.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag>(body.data(), body.size());
  if (doc.HasParseError())
    return fmt::format("the /sync response is not JSON (offset {}: {})", doc.GetErrorOffset(),
                       rapidjson::GetParseError_En(doc.GetParseError()));
  if (!doc.IsObject()) return std::string("the /sync response is not a JSON object");

  sync_batch batch;
  std::string why;
  auto next = required_string(doc, "next_batch", why);
  if (!next) return "the /sync response has " + why;
  if (next->empty()) return std::string("the /sync response has an empty 'next_batch'");
  batch.next_batch = std::move(*next);

  const value* rooms = member(doc, "rooms");
  if (rooms == nullptr) return batch;
  if (!rooms->IsObject()) return std::string("the /sync response's 'rooms' is not an object");
  const value* join = member(*rooms, "join");
  const value* invite = member(*rooms, "invite");
  const value* leave = member(*rooms, "leave");
  for (const auto& [section, name] : {std::pair{join, "join"}, std::pair{invite, "invite"}, std::pair{leave, "leave"}})
    if (section != nullptr && !section->IsObject())
      return fmt::format("the /sync response's 'rooms.{}' is not an object", name);

  if (join != nullptr)
    for_each_room(*join, "join", batch.skipped, [&](std::string id, const value& r) {
      batch.joined.push_back(decode_joined(std::move(id), r, batch.skipped, limits.max_depth));
    });
  if (invite != nullptr)
    for_each_room(*invite, "invite", batch.skipped, [&](std::string id, const value& r) {
      batch.invited.push_back(decode_invited(std::move(id), r, bot_user_id, batch.skipped, limits.max_depth));
    });
  if (leave != nullptr)
    for_each_room(*leave, "leave", batch.skipped,
                  [&](std::string id, const value&) { batch.left.push_back(std::move(id)); });
  return batch;
}

std::optional<power_levels> parse_power_levels(std::string_view content_json) {
  auto parsed = json::parse_object(content_json, 32);
  if (std::holds_alternative<std::string>(parsed)) return std::nullopt;
  return decode_power_levels(std::get<rapidjson::Document>(parsed));
}

// ---- rules -------------------------------------------------------------------------------

bool is_from_bot(const message_event& e, std::string_view bot_user_id) {
  return !bot_user_id.empty() && e.sender == bot_user_id;
}

bool is_from_bot(const reaction_event& e, std::string_view bot_user_id) {
  return !bot_user_id.empty() && e.sender == bot_user_id;
}

bool is_from_bot(const timeline_event& e, std::string_view bot_user_id) {
  return std::visit([&](const auto& ev) { return is_from_bot(ev, bot_user_id); }, e);
}

std::optional<std::string> should_ignore(const message_event& e, std::string_view bot_user_id) {
  if (is_from_bot(e, bot_user_id)) return "sent by the bot";
  if (e.is_edit()) return "an edit, not a new turn";
  if (e.msgtype == "m.notice") return "an m.notice (automated; answering could loop between bots)";
  if (e.msgtype == "m.key.verification.request") return "a key verification request (no end-to-end encryption)";
  const bool blank = std::all_of(e.body.begin(), e.body.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  });
  if (blank && !e.media) return "an empty body";
  return std::nullopt;
}

bool is_addressed(const message_event& e, std::string_view bot_user_id, std::string_view bot_display_name,
                  std::int64_t room_joined_member_count, const std::string* replied_to_sender) {
  if (room_joined_member_count == 2) return true;
  if (bot_user_id.empty()) return false;
  if (std::find(e.mentioned_user_ids.begin(), e.mentioned_user_ids.end(), bot_user_id) != e.mentioned_user_ids.end())
    return true;
  if (replied_to_sender != nullptr && !e.reply_to.empty() && *replied_to_sender == bot_user_id) return true;
  if (!bot_display_name.empty() && names_as_word(e.body, bot_display_name)) return true;
  // Legacy mentions: the user id in the body, or a pill linking to it.
  if (names_user_id(e.body, bot_user_id)) return true;
  if (!e.formatted_body.empty()) {
    const std::string id(bot_user_id);
    for (const auto& link : {"https://matrix.to/#/" + id, "https://matrix.to/#/" + percent_encode(id),
                             "matrix:u/" + id.substr(1)}) {
      for (auto at = e.formatted_body.find(link); at != std::string::npos; at = e.formatted_body.find(link, at + 1)) {
        // The link must end there ("@bot:example.org" does not name "@bot:example.org.evil").
        const auto end = at + link.size();
        if (end == e.formatted_body.size() || e.formatted_body[end] == '"' || e.formatted_body[end] == '\'' ||
            e.formatted_body[end] == '?')
          return true;
      }
    }
  }
  return false;
}

bool user_allowed(std::string_view user_id, const std::vector<std::string>& patterns) {
  if (patterns.empty()) return true;
  return std::any_of(patterns.begin(), patterns.end(), [&](const std::string& p) { return glob_match(p, user_id); });
}

std::optional<auto_join> parse_auto_join(std::string_view text, std::string* error) {
  if (text == "off") return auto_join::off;
  if (text == "invited-by-allowed") return auto_join::invited_by_allowed;
  if (text == "all") return auto_join::all;
  if (error != nullptr)
    *error = fmt::format("unknown auto-join policy {} (off, invited-by-allowed or all)", json::quoted(text));
  return std::nullopt;
}

std::string_view to_string(auto_join policy) {
  switch (policy) {
    case auto_join::off: return "off";
    case auto_join::invited_by_allowed: return "invited-by-allowed";
    case auto_join::all: return "all";
  }
  return "off";
}

join_decision should_join(auto_join policy, std::string_view inviter, const std::vector<std::string>& allowed_patterns,
                          bool encrypted) {
  if (policy == auto_join::off) return {false, "auto-join is off"};
  if (encrypted) return {false, "the room is encrypted (end-to-end encryption is not supported)"};
  if (policy == auto_join::all) return {true, "auto-join accepts every invite"};
  if (inviter.empty()) return {false, "the inviter is unknown"};
  if (!user_allowed(inviter, allowed_patterns)) return {false, fmt::format("{} is not an allowed user", inviter)};
  return {true, fmt::format("invited by {}, an allowed user", inviter)};
}

std::string txn_id_for(std::string_view message_key, int part) {
  // Domain-separated, and the part after a NUL: no (key, part) pair yields another's input.
  std::string input = "stargazer.matrix.txn";
  input.push_back('\0');
  input.append(message_key);
  input.push_back('\0');
  input += std::to_string(part);
  return sha256_hex(input);
}

std::string sync_filter_json(int timeline_limit) {
  timeline_limit = std::max(timeline_limit, 1);
  return fmt::format(
      R"({{"presence":{{"not_types":["*"]}},"account_data":{{"not_types":["*"]}},"room":{{)"
      R"("timeline":{{"limit":{},"types":["m.room.message","m.reaction","m.room.member","m.room.encryption","m.room.name","m.room.power_levels"]}},)"
      R"("state":{{"types":["m.room.member","m.room.encryption","m.room.name","m.room.power_levels"],"lazy_load_members":false}},)"
      R"("ephemeral":{{"not_types":["*"]}},"account_data":{{"not_types":["*"]}}}}}})",
      timeline_limit);
}

std::int64_t power_level_of(const power_levels& levels, std::string_view user_id) {
  const auto it = levels.users.find(std::string(user_id));
  return it != levels.users.end() ? it->second : levels.users_default;
}

bool is_room_admin(const power_levels& levels, std::string_view user_id) {
  return power_level_of(levels, user_id) >= admin_power_level;
}

std::string strip_reply_fallback(std::string_view body) {
  if (body.substr(0, 2) != "> ") return std::string(body);
  std::string_view rest = body;
  while (rest.substr(0, 2) == "> ") {
    const auto nl = rest.find('\n');
    if (nl == std::string_view::npos) return {};
    rest.remove_prefix(nl + 1);
  }
  if (!rest.empty() && rest.front() == '\n') rest.remove_prefix(1);
  return std::string(rest);
}

std::string strip_reply_fallback_html(std::string_view formatted_body) {
  static constexpr std::string_view open = "<mx-reply>", close = "</mx-reply>";
  if (formatted_body.substr(0, open.size()) != open) return std::string(formatted_body);
  const auto end = formatted_body.find(close);
  if (end == std::string_view::npos) return std::string(formatted_body);
  return std::string(formatted_body.substr(end + close.size()));
}

}  // namespace stargazer::platform::matrix
