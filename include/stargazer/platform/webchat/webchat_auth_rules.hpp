#pragma once
// Web chat sign-in without I/O (docs/webchat.md, "Sign-in"): the shapes of invites and
// sessions, their Redis key names, tokens and ids, durations, cookies, whether a request
// came over HTTPS. Pure, so the command line (roles/options.cpp) and the fuzz build use it
// too; the Redis side is webchat_auth.hpp.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stargazer::http {
struct request;
}

namespace stargazer::platform {

enum class webchat_auth_mode {
  none,    // anyone who reaches the page chats under a name they type (keep to loopback)
  invite,  // a session from a one-time invite link is needed; its name is the invite's
};

inline constexpr std::string_view webchat_session_cookie = "sg_webchat_session";
// Payload: the digest of a revoked session. Every gateway closes that session's sockets.
inline constexpr std::string_view webchat_revoked_channel = "stargazer:webchat:revoked";
inline constexpr std::string_view webchat_invites_index = "webchat:invites";    // zset digest -> expires_at
inline constexpr std::string_view webchat_sessions_index = "webchat:sessions";  // zset digest -> expires_at

std::string webchat_invite_key(std::string_view digest);
std::string webchat_session_key(std::string_view digest);

// What a session lets its browser do: who it speaks as and where.
struct webchat_identity {
  std::string session_digest;  // SHA-256 of the cookie's token (never shown)
  std::string session_id;      // the digest's first 16 hex digits: how operators name the session
  std::string name;
  std::string user_id;
  std::vector<std::string> rooms;  // empty: every room
  bool admin = false;
  std::int64_t created_at = 0;  // unix seconds
  std::int64_t expires_at = 0;
  std::string invite_id;

  bool may_use_room(std::string_view room) const;
};

struct webchat_invite {
  std::string invite_id;  // the token digest's first 16 hex digits
  std::string name;
  std::string user_id;
  std::vector<std::string> rooms;  // empty: every room
  bool admin = false;
  std::int64_t created_at = 0;
  std::int64_t expires_at = 0;  // the link works until then
  std::string state;            // pending, used, revoked or expired
  std::int64_t used_at = 0;
  std::string session_id;  // the session the link opened (state used)
};

// Limits of what an invite may carry.
struct webchat_invite_limits {
  std::size_t max_name_bytes = 64;
  std::size_t max_room_bytes = 32;
  std::size_t max_rooms = 32;
  std::chrono::seconds max_ttl{365 * 86400};
};

// Whether `token` has the shape new_webchat_token makes; nothing else is hashed or looked up.
bool valid_webchat_token(std::string_view token);
// The public id of a session or invite: the first 16 hex digits of its digest.
std::string webchat_public_id(std::string_view digest);
bool valid_webchat_public_id(std::string_view id);

// The web chat user id of an invited name ("inv-" and 24 hex digits of its SHA-256): the
// same for every invite of that name, so one person's devices are one user (history,
// --webchat-admins, identity links). Fits valid_webchat_user_id.
std::string invited_user_id(std::string_view name);

// A duration as the command line writes it: 90s, 30m, 12h, 7d, 2w or plain seconds;
// nullopt when malformed or outside 1 s .. max.
std::optional<std::chrono::seconds> parse_webchat_duration(std::string_view text, std::chrono::seconds max);

// Rooms stored in one hash field, comma-separated.
std::string join_rooms(const std::vector<std::string>& rooms);
std::vector<std::string> split_rooms(std::string_view text);

// Set-Cookie values: the session's (HttpOnly, SameSite=Strict, Path=/webchat, Max-Age,
// Secure when the browser uses HTTPS) and the one that deletes it.
std::string webchat_session_cookie_header(std::string_view token, std::chrono::seconds max_age, bool secure);
std::string webchat_cleared_cookie_header(bool secure);

// Whether the browser reached the gateway over HTTPS: `public_url` is https, or a trusted
// proxy says so in X-Forwarded-Proto (a client's own claim is not believed).
bool webchat_request_is_https(const http::request& req, std::string_view public_url);

// The base of invite links: `public_url` without a trailing '/', else the request's own
// origin (scheme as webchat_request_is_https, the Host header).
std::string webchat_link_base(const http::request& req, std::string_view public_url);

}  // namespace stargazer::platform
