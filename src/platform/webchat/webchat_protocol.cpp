#include "stargazer/platform/webchat/webchat_protocol.hpp"

#include "stargazer/core/json.hpp"
#include "stargazer/core/strings.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <set>

namespace stargazer::platform {

bool is_hex32(std::string_view s) {
  return s.size() == 32 && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

std::string safe_filename(std::string_view in) {
  std::string out;
  for (unsigned char c : in) {
    if (out.size() >= 128) break;
    const bool bad =
        c < 0x20 || c == 0x7f || c == '/' || c == '\\' || c == '"' || c == '%' || c == '?' || c == '#';
    out.push_back(bad ? '_' : static_cast<char>(c));
  }
  // Cut a UTF-8 sequence the length limit split.
  while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0x80) != 0) {
    std::size_t start = out.size() - 1;
    while (start > 0 && (static_cast<unsigned char>(out[start]) & 0xc0) == 0x80) --start;
    const auto lead = static_cast<unsigned char>(out[start]);
    const std::size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    if (out.size() - start == need) break;
    out.resize(start);
  }
  if (out.empty() || out == "." || out == "..") out = "file";
  return out;
}

std::string file_url(std::string_view file_id, std::string_view filename) {
  return "/webchat/files/" + std::string(file_id) + "/" + percent_encode(filename);
}

bool safe_mimetype(std::string_view m) {
  if (m.empty() || m.size() > 128 || m.find('/') == std::string_view::npos) return false;
  return std::all_of(m.begin(), m.end(), [](unsigned char c) { return c >= 0x20 && c < 0x7f; });
}

std::string error_frame(std::string_view code, std::string_view message) {
  return fmt::format(R"({{"type":"error","code":{},"message":{}}})", json::quoted(code),
                     json::quoted(message));
}

std::string message_frame(std::string_view room, const cached_message& m) {
  return fmt::format(
      R"({{"type":"message","room":{},"id":{},"user_id":{},"user_name":{},"text":{},"timestamp":{:.3f},"is_bot":{}}})",
      json::quoted(room), json::quoted(m.message_id), json::quoted(m.user_id), json::quoted(m.user_name),
      json::quoted(m.text), m.timestamp, m.is_bot ? "true" : "false");
}

std::string file_frame(std::string_view room, const cached_message& m, const file_info& f) {
  return fmt::format(
      R"({{"type":"file","room":{},"id":{},"user_id":{},"user_name":{},"filename":{},"mimetype":{},"size":{},"url":{},"timestamp":{:.3f},"is_bot":{}}})",
      json::quoted(room), json::quoted(m.message_id), json::quoted(m.user_id), json::quoted(m.user_name),
      json::quoted(f.filename), json::quoted(f.mimetype), f.size,
      json::quoted(file_url(m.message_id, f.filename)), m.timestamp, m.is_bot ? "true" : "false");
}

std::string typing_frame(std::string_view room, std::string_view who, bool active, std::string_view turn) {
  return fmt::format(R"({{"type":"typing","room":{},"user_name":{},"active":{},"turn":{}}})",
                     json::quoted(room), json::quoted(who), active ? "true" : "false", json::quoted(turn));
}


// Validation

bool valid_room_id(std::string_view room, std::size_t max) {
  if (room.empty() || room.size() > max) return false;
  const auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(room.front())) return false;
  return std::all_of(room.begin(), room.end(), [&](char c) { return alnum(c) || c == '-' || c == '_'; });
}

bool valid_webchat_user_id(std::string_view id) {
  if (id.size() < 8 || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  });
}

std::optional<std::string> normalized_display_name(std::string_view name, std::size_t max) {
  while (!name.empty() && (name.front() == ' ' || name.front() == '\t')) name.remove_prefix(1);
  while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
  if (name.empty() || name.size() > max) return std::nullopt;
  for (unsigned char c : name)
    if (c < 0x20 || c == 0x7f) return std::nullopt;
  return std::string(name);
}

namespace {

// "@handle" at the start of the text (after spaces), not followed by a word character.
bool starts_with_mention(std::string_view text, std::string_view handle) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t' || text.front() == '\n')) text.remove_prefix(1);
  if (handle.empty() || text.size() < handle.size() + 1 || text.front() != '@') return false;
  if (!iequals(text.substr(1, handle.size()), handle)) return false;
  if (text.size() == handle.size() + 1) return true;
  const auto next = static_cast<unsigned char>(text[handle.size() + 1]);
  const bool word = (next >= 'a' && next <= 'z') || (next >= 'A' && next <= 'Z') || (next >= '0' && next <= '9') ||
                    next == '_' || next >= 0x80;
  return !word;
}

}  // namespace

bool webchat_addressed(std::string_view text, std::string_view bot_name, std::string_view bot_user_id) {
  // "@Star ..." names the bot as a word already; the user id is a handle only after '@'.
  return names_as_word(text, bot_name) || starts_with_mention(text, bot_user_id);
}

std::string presence_member(std::string_view user_id, std::string_view connection_id) {
  return std::string(user_id) + ":" + std::string(connection_id);
}

std::size_t humans_present(const std::vector<std::string>& members, std::string_view sender) {
  std::set<std::string_view> users{sender};
  for (const auto& m : members) {
    const auto colon = m.rfind(':');
    users.insert(std::string_view(m).substr(0, colon == std::string::npos ? m.size() : colon));
  }
  return users.size();
}

bool webchat_origin_allowed(std::optional<std::string_view> origin, std::optional<std::string_view> host,
                            const std::vector<std::string>& allowed) {
  if (!origin) return true;  // browsers always send Origin on a WebSocket handshake; other clients may not
  for (const auto& a : allowed)
    if (a == "*" || iequals(a, *origin)) return true;
  if (!host || host->empty()) return false;
  const auto host_part = [&](std::string_view scheme) {
    return origin->size() == scheme.size() + host->size() &&
           iequals(origin->substr(0, scheme.size()), scheme) && iequals(origin->substr(scheme.size()), *host);
  };
  return host_part("http://") || host_part("https://");
}

}  // namespace stargazer::platform
