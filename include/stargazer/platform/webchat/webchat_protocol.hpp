#pragma once
// The web chat's WebSocket protocol (docs/webchat.md, "Protocol"): the JSON frames the
// server sends, and the checks on what browsers send. Pure functions; the adapter
// (webchat_platform.hpp) does the I/O.

#include "stargazer/platform/message_cache.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stargazer::platform {

// 1..max characters of [a-z0-9_-], starting with a letter or digit.
bool valid_room_id(std::string_view room, std::size_t max);
// 8..64 characters of [A-Za-z0-9_-] (the page mints 32 hex digits and keeps them in localStorage).
bool valid_webchat_user_id(std::string_view id);
// Trimmed display name: nullopt when empty, too long or holding control characters.
std::optional<std::string> normalized_display_name(std::string_view name, std::size_t max);
// The WebSocket origin policy: no Origin header (not a browser) is allowed; otherwise the
// origin must be the page's own (http:// or https:// + the Host header) or listed in
// `allowed` ("*" allows any). Comparisons ignore ASCII case.
bool webchat_origin_allowed(std::optional<std::string_view> origin, std::optional<std::string_view> host,
                            const std::vector<std::string>& allowed);

// Whether a message is meant for the bot: it names the bot as a word, or starts with
// "@{bot_name}" or "@{bot_user_id}" (ASCII case ignored). Rooms with one human are direct
// and addressed whatever the text says (the adapter knows who is there).
bool webchat_addressed(std::string_view text, std::string_view bot_name, std::string_view bot_user_id);

// Room presence (the zset webchat_members_key(room)): each connection is one member,
// "{user_id}:{connection_id}", scored with the unix time it was last confirmed. The number
// of humans in a room: the distinct user ids among `members`, counting `sender` too.
std::string presence_member(std::string_view user_id, std::string_view connection_id);
std::size_t humans_present(const std::vector<std::string>& members, std::string_view sender);

// A file id the web chat minted: 32 lowercase hex digits.
bool is_hex32(std::string_view s);
// Keeps what a filename may safely hold in a URL segment and a header: no separators,
// quotes or control characters, at most 128 bytes, never a dot-segment.
std::string safe_filename(std::string_view in);
// Where a file is served: /webchat/files/{file_id}/{percent-encoded filename}.
std::string file_url(std::string_view file_id, std::string_view filename);
// A type/subtype of printable ASCII, at most 128 bytes.
bool safe_mimetype(std::string_view m);

// Frames the server sends.
struct file_info {
  std::string filename;
  std::string mimetype;
  std::size_t size = 0;
};
std::string error_frame(std::string_view code, std::string_view message);
std::string message_frame(std::string_view room, const cached_message& m);
std::string file_frame(std::string_view room, const cached_message& m, const file_info& f);
std::string typing_frame(std::string_view room, std::string_view who, bool active, std::string_view turn);

}  // namespace stargazer::platform
