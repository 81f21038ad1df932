#include "stargazer/platform/webchat/webchat_auth_rules.hpp"

#include "stargazer/core/digest.hpp"
#include "stargazer/core/strings.hpp"
#include "stargazer/http/message.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

namespace stargazer::platform {

namespace {

constexpr std::size_t token_hex_digits = 64;
constexpr std::size_t public_id_hex_digits = 16;

bool lower_hex(std::string_view s) {
  return s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

}  // namespace

std::string webchat_invite_key(std::string_view digest) { return "webchat:invite:" + std::string(digest); }
std::string webchat_session_key(std::string_view digest) { return "webchat:session:" + std::string(digest); }

bool webchat_identity::may_use_room(std::string_view room) const {
  return rooms.empty() || std::find(rooms.begin(), rooms.end(), room) != rooms.end();
}

bool valid_webchat_token(std::string_view token) {
  return token.size() == token_hex_digits && lower_hex(token);
}

std::string webchat_public_id(std::string_view digest) {
  return std::string(digest.substr(0, public_id_hex_digits));
}

bool valid_webchat_public_id(std::string_view id) {
  return id.size() == public_id_hex_digits && lower_hex(id);
}

std::string invited_user_id(std::string_view name) { return "inv-" + sha256_hex(name).substr(0, 24); }

std::optional<std::chrono::seconds> parse_webchat_duration(std::string_view text, std::chrono::seconds max) {
  if (text.empty() || text.size() > 12) return std::nullopt;
  std::int64_t count = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), count);
  if (ec != std::errc{} || ptr == text.data()) return std::nullopt;
  const std::string_view unit(ptr, static_cast<std::size_t>(text.data() + text.size() - ptr));
  std::int64_t scale = 0;
  if (unit.empty() || unit == "s") scale = 1;
  else if (unit == "m") scale = 60;
  else if (unit == "h") scale = 3600;
  else if (unit == "d") scale = 86400;
  else if (unit == "w") scale = 7 * 86400;
  else return std::nullopt;
  // At most 12 characters: count * scale cannot overflow before this check.
  if (count < 1 || count > max.count() / scale) return std::nullopt;
  return std::chrono::seconds(count * scale);
}

std::string join_rooms(const std::vector<std::string>& rooms) {
  std::string out;
  for (const auto& r : rooms) out += (out.empty() ? "" : ",") + r;
  return out;
}

std::vector<std::string> split_rooms(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    const auto comma = text.find(',');
    if (const auto room = text.substr(0, comma); !room.empty()) out.emplace_back(room);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

std::string webchat_session_cookie_header(std::string_view token, std::chrono::seconds max_age, bool secure) {
  // Path=/webchat: only the chat's own requests (the WebSocket, the session and file
  // routes) carry it. SameSite=Strict: no other site's page can use it.
  return fmt::format("{}={}; Path=/webchat; Max-Age={}; HttpOnly; SameSite=Strict{}", webchat_session_cookie, token,
                     max_age.count(), secure ? "; Secure" : "");
}

std::string webchat_cleared_cookie_header(bool secure) {
  return webchat_session_cookie_header("", std::chrono::seconds(0), secure);
}

bool webchat_request_is_https(const http::request& req, std::string_view public_url) {
  if (public_url.size() >= 8 && iequals(public_url.substr(0, 8), "https://")) return true;
  if (!req.via_trusted_proxy) return false;
  const auto proto = req.header("x-forwarded-proto");
  if (!proto) return false;
  // The first value is what the outermost proxy saw.
  auto first = proto->substr(0, proto->find(','));
  while (!first.empty() && first.front() == ' ') first.remove_prefix(1);
  while (!first.empty() && first.back() == ' ') first.remove_suffix(1);
  return iequals(first, "https");
}

std::string webchat_link_base(const http::request& req, std::string_view public_url) {
  if (!public_url.empty()) {
    while (!public_url.empty() && public_url.back() == '/') public_url.remove_suffix(1);
    return std::string(public_url);
  }
  const auto host = req.header("host").value_or("localhost");
  return std::string(webchat_request_is_https(req, public_url) ? "https://" : "http://") + std::string(host);
}

}  // namespace stargazer::platform
