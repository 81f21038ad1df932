#pragma once
// The Matrix Client-Server API's /sync response (v1.x; data/api/client-server/sync.yaml),
// decoded into what the bot acts on, and the pure decisions the Matrix adapter makes about
// it: what to ignore, whether a message addresses the bot, whom it obeys, which invites it
// accepts, the transaction ids of its sends, the filter it uploads, and power levels.
// Pure: the adapter (HTTP, long poll, media download) does the I/O.
//
// Decoding is defensive. The batch fails only when the envelope is unusable: not JSON, not
// UTF-8, absurdly deep (sync_limits::max_body_depth), not an object, no `next_batch`
// string, or `rooms` / `rooms.join` / `rooms.invite` / `rooms.leave` present with the wrong
// type (the adapter then retries the same `since` instead of skipping what it could not
// read). Anything smaller (a room, an event, a field) that is malformed is left out and
// listed in `sync_batch::skipped` with the reason; so is an event the bot would read that
// nests deeper than sync_limits::max_depth (room members choose their events' content: one
// such event must not stall the sync at its token). Optional fields of the wrong type count
// as absent; a member set to null counts as absent. Every id and text handed out is valid
// UTF-8 (RapidJSON decodes the escape "\udc00" into bytes that are not; a field holding one
// counts as the wrong type).
//
// Nothing recurses once per nesting level of the response: it is parsed with RapidJSON's
// iterative parser (its stack is on the heap), an event's depth is measured with an explicit
// stack before its content is read, and nothing walks a whole value (no to_string, Accept or
// CopyFrom of untrusted values).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace stargazer::platform::matrix {

// ---- decoded events ----------------------------------------------------------------------

// An mxc:// URI (content_repo.md: mxc://<server-name>/<media-id>).
struct mxc_uri {
  std::string server_name;  // letters, digits, '.', '-', ':', '[', ']' (a host, IPv6 literal, port)
  std::string media_id;     // [A-Za-z0-9_-]+
};
// nullopt unless `uri` is exactly such a URI (no path, query or fragment beyond the media id).
std::optional<mxc_uri> parse_mxc(std::string_view uri);

// The media of an m.image / m.file / m.audio / m.video message (not downloaded).
struct media_ref {
  std::string url;                    // a valid mxc:// URI (parse_mxc accepts it)
  std::string filename;               // content.filename, else content.body
  std::optional<std::int64_t> size;   // content.info.size, when a non-negative integer
  std::string mimetype;               // content.info.mimetype, "" when absent
};

// An edit (rel_type m.replace, event_replacements.md). Only its shape is checked here: the
// spec also requires the original to have the same sender and type, which only the caller,
// holding the original, can check.
struct edit_info {
  std::string replaces_event_id;  // m.relates_to.event_id: the edited event
  std::string body;               // m.new_content.body
  std::string msgtype;            // m.new_content.msgtype ("" when absent)
  std::string formatted_body;     // m.new_content.formatted_body ("" when absent)
};

// An m.room.message event.
struct message_event {
  std::string event_id;  // starts with '$'
  std::string sender;    // starts with '@'
  std::int64_t origin_server_ts = 0;  // milliseconds since the epoch
  std::string msgtype;   // m.text, m.emote, m.notice, m.image, ... (unknown ones are kept)
  // The text: for m.text / m.emote / m.notice and unknown msgtypes, content.body, with a
  // reply's fallback quote ("> " lines, rich_replies.md) removed. For media, the caption:
  // content.body when content.filename is also given and differs from it, else "".
  std::string body;
  std::string format;          // content.format ("org.matrix.custom.html"), "" when absent
  std::string formatted_body;  // content.formatted_body, a reply's <mx-reply> removed; "" when absent
  std::optional<media_ref> media;  // m.image, m.file, m.audio, m.video
  // m.relates_to.m.in_reply_to.event_id; "" when not a reply. A thread's fallback reply
  // (is_falling_back: true) is not a reply.
  std::string reply_to;
  std::string thread_root;  // m.relates_to.event_id when rel_type is m.thread
  std::optional<edit_info> edit;  // set for an edit (rel_type m.replace with m.new_content)
  std::vector<std::string> mentioned_user_ids;  // m.mentions.user_ids (its string entries)
  bool mentions_room = false;                   // m.mentions.room == true

  bool is_edit() const { return edit.has_value(); }
};

// An m.reaction event (rel_type m.annotation, event_annotations.md).
struct reaction_event {
  std::string event_id;
  std::string sender;
  std::int64_t origin_server_ts = 0;
  std::string target_event_id;  // m.relates_to.event_id: what was reacted to
  std::string key;              // m.relates_to.key: the emoji (or any non-empty text)
};

// What the bot acts on in a room's timeline, in timeline order.
using timeline_event = std::variant<message_event, reaction_event>;

// A user's membership as last seen in the batch (m.room.member).
struct member_info {
  std::string membership;                  // join, invite, leave, ban, knock (as sent)
  std::optional<std::string> displayname;  // nullopt when absent or null
};

// m.room.power_levels content, the parts that rank users (the levels required for actions
// are not kept). Room versions 1-9 allowed integers as strings ("50"); both are read.
struct power_levels {
  std::map<std::string, std::int64_t> users;
  std::int64_t users_default = 0;
};

struct joined_room {
  std::string room_id;
  bool limited = false;     // timeline.limited: events were left out before the timeline
  std::string prev_batch;   // timeline.prev_batch ("" when absent): /messages from here fills the gap
  // m.room.member events of state, then timeline, then state_after (if the server sent
  // it): user id (the state_key) → the last membership seen.
  std::map<std::string, member_info> members;
  bool encrypted = false;   // an m.room.encryption state event appeared (state or timeline)
  std::optional<std::string> name;  // the last m.room.name seen; "" when it was removed
  std::optional<std::int64_t> joined_member_count;  // summary.m.joined_member_count
  std::optional<power_levels> power;                // the last m.room.power_levels seen
  std::vector<timeline_event> events;               // messages and reactions, in order
};

struct invited_room {
  std::string room_id;
  // Sender of the m.room.member invite whose state_key is the bot; "" when the invite
  // state has no such event.
  std::string inviter;
  bool is_direct = false;   // that event's content.is_direct
  bool encrypted = false;   // m.room.encryption in the invite state
  std::string name;         // m.room.name in the invite state, "" when absent
};

// Something left out of the batch, and why.
struct skipped_item {
  std::string room_id;   // "" for something outside any room
  std::string event_id;  // "" when not an event, or the event has none
  std::string type;      // the event type when known
  std::string reason;
};

struct sync_batch {
  std::string next_batch;  // the `since` of the next /sync (never empty)
  std::vector<joined_room> joined;   // rooms.join, in the order given
  std::vector<invited_room> invited; // rooms.invite, in the order given
  std::vector<std::string> left;     // rooms.leave: the room ids, in the order given
  std::vector<skipped_item> skipped;
};

struct sync_limits {
  std::size_t max_bytes = 32 * 1024 * 1024;
  // How deeply one event the bot reads may nest (the event object is level 1, its content
  // level 2, ...). A deeper event is left out and listed in `skipped`; the rest of the
  // batch is decoded. Events of types the bot ignores are not measured.
  unsigned max_depth = 64;
  // How deeply the whole response may nest before it is refused (checked before parsing).
  // Only against absurd input: parsing does not recurse, so this need not be tight.
  unsigned max_body_depth = 10000;
};

// A /sync response body → the batch, or what makes it unusable. `bot_user_id` finds the
// bot's own invite in invite state.
std::variant<sync_batch, std::string> decode_sync(std::string_view body, std::string_view bot_user_id,
                                                  const sync_limits& limits = {});

// m.room.power_levels content as JSON text → its user levels; nullopt when the text is not
// a JSON object (or nests deeper than 32 levels).
std::optional<power_levels> parse_power_levels(std::string_view content_json);

// ---- rules -------------------------------------------------------------------------------

bool is_from_bot(const message_event& e, std::string_view bot_user_id);
bool is_from_bot(const reaction_event& e, std::string_view bot_user_id);
bool is_from_bot(const timeline_event& e, std::string_view bot_user_id);

// Why the bot takes no turn for this message, or nullopt when it may: its own message, an
// edit (not a new turn), an m.notice (bots send notices; answering one could start a loop
// between bots), a key verification request (no end-to-end encryption here), or nothing
// to answer (a body of only whitespace and no media).
std::optional<std::string> should_ignore(const message_event& e, std::string_view bot_user_id);

// Whether the message speaks to the bot: the room has exactly two joined members (a DM;
// `room_joined_member_count` <= 0 means unknown); m.mentions.user_ids names the bot; it
// replies to an event the bot sent (the caller looks up the replied-to event's sender and
// passes it, or nullptr); the body names the bot's display name as a whole word
// (case-insensitive, core/strings names_as_word). Legacy mentions also count: the bot's
// user id standing on its own in the body (exactly: "@bot:example.org." names it,
// "@bot:example.org.evil" does not), or a matrix.to / matrix: link to it in
// formatted_body. An @room mention (m.mentions.room) does not.
bool is_addressed(const message_event& e, std::string_view bot_user_id, std::string_view bot_display_name,
                  std::int64_t room_joined_member_count, const std::string* replied_to_sender);

// Whether `user_id` matches one of the glob patterns ('*': any run of characters, also
// none; '?': one character; everything else literally, case-sensitive, as user ids
// compare). An empty list allows everyone. Example: "@*:example.org".
bool user_allowed(std::string_view user_id, const std::vector<std::string>& patterns);

// Which invites the bot accepts.
enum class auto_join {
  off,                 // none
  invited_by_allowed,  // invites from users user_allowed() accepts
  all,                 // every invite
};
// "off", "invited-by-allowed", "all" → the policy; nullopt (and `error` names the value)
// for anything else.
std::optional<auto_join> parse_auto_join(std::string_view text, std::string* error = nullptr);
std::string_view to_string(auto_join policy);

struct join_decision {
  bool join = false;
  std::string reason;  // why (for the log), also when joining
};
// Whether to accept an invite. Encrypted rooms are refused: the platform does not support
// end-to-end encryption. An unknown inviter ("") is refused under invited_by_allowed.
join_decision should_join(auto_join policy, std::string_view inviter, const std::vector<std::string>& allowed_patterns,
                          bool encrypted);

// The transaction id of part `part` of the reply with our message key `message_key`:
// deterministic, so a send repeated after a crash reuses it and the homeserver
// deduplicates it. 64 lowercase hex characters (SHA-256), safe in a URL path segment.
std::string txn_id_for(std::string_view message_key, int part);

// The filter the bot uploads (POST /user/{userId}/filter), as JSON text: timeline events
// m.room.message, m.reaction, m.room.member, m.room.encryption, m.room.name and
// m.room.power_levels, at most `timeline_limit` per room; state m.room.member (not
// lazy-loaded: the member counts are needed), m.room.encryption, m.room.name,
// m.room.power_levels; no presence, account data or ephemeral events.
std::string sync_filter_json(int timeline_limit = 50);

// A user's power level: `users[user_id]`, else users_default.
std::int64_t power_level_of(const power_levels& levels, std::string_view user_id);
// Users at this level or above are channel admins (bus::platform_admin_role).
inline constexpr std::int64_t admin_power_level = 50;
bool is_room_admin(const power_levels& levels, std::string_view user_id);

// A reply's fallback quote removed from a plain body: the leading lines starting with
// "> " (rich_replies.md), then one empty line after them. Other text is returned as is.
std::string strip_reply_fallback(std::string_view body);
// The same for formatted_body: a leading <mx-reply>...</mx-reply> element.
std::string strip_reply_fallback_html(std::string_view formatted_body);

}  // namespace stargazer::platform::matrix
