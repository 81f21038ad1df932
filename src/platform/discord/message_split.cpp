#include "stargazer/platform/discord/message_split.hpp"

#include <algorithm>
#include <optional>

namespace stargazer::platform::discord {

namespace {

bool is_continuation(char c) { return (static_cast<unsigned char>(c) & 0xc0) == 0x80; }

// The byte offset just past the first `chars` characters of `s` (or s.size()).
std::size_t byte_offset(std::string_view s, std::size_t chars) {
  std::size_t i = 0;
  while (i < s.size() && chars > 0) {
    ++i;
    while (i < s.size() && is_continuation(s[i])) ++i;
    --chars;
  }
  return i;
}

// The fence line (e.g. "```cpp") of the code block open at the end of `s`, if one is.
std::optional<std::string> open_fence(std::string_view s) {
  std::optional<std::string> open;
  std::size_t pos = 0;
  while ((pos = s.find("```", pos)) != std::string_view::npos) {
    if (open) {
      open.reset();
      pos += 3;
    } else {
      auto end = s.find('\n', pos);
      const auto line = s.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
      // The language is the first word after the fence; the rest of the line is code.
      const auto word_end = line.find_first_of(" \t`", 3);
      open = std::string(line.substr(0, word_end == std::string_view::npos ? line.size() : word_end));
      pos += 3;
    }
  }
  return open;
}

// Where to cut `window` (the bytes that fit): the byte count of the part, > 0.
std::size_t cut_point(std::string_view window) {
  if (window.size() < 2) return window.size();
  const auto min_cut = window.size() / 4;  // a cut that leaves a tiny part is worse than a mid-word one
  const auto at = [&](std::size_t p) { return p != std::string_view::npos && p >= min_cut ? p : std::string_view::npos; };
  if (auto p = at(window.rfind("\n\n")); p != std::string_view::npos) return p + 2;
  if (auto p = at(window.rfind('\n')); p != std::string_view::npos) return p + 1;
  for (std::size_t p = window.size(); p-- > min_cut + 1;) {
    const char c = window[p - 1];
    if ((c == '.' || c == '!' || c == '?') && (window[p] == ' ' || window[p] == '\n')) return p + 1;
  }
  if (auto p = at(window.rfind(' ')); p != std::string_view::npos) return p + 1;
  return window.size();
}

std::string trimmed(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n')) s.remove_suffix(1);
  while (!s.empty() && s.front() == '\n') s.remove_prefix(1);
  return std::string(s);
}

}  // namespace

std::size_t count_chars(std::string_view utf8) {
  return static_cast<std::size_t>(std::count_if(utf8.begin(), utf8.end(), [](char c) { return !is_continuation(c); }));
}

std::vector<std::string> split_message(std::string_view text, std::size_t limit) {
  limit = std::max<std::size_t>(limit, 32);
  std::vector<std::string> parts;
  std::string carry;  // the fence reopened at the start of the next part
  std::string_view rest = text;
  while (!rest.empty()) {
    const std::size_t prefix = carry.empty() ? 0 : count_chars(carry) + 1;
    std::size_t cut = rest.size();
    if (prefix + count_chars(rest) > limit) {
      const std::size_t room = limit - prefix - 4;  // 4: a closing "\n```"
      cut = cut_point(rest.substr(0, byte_offset(rest, room)));
    }
    std::string part = carry.empty() ? std::string() : carry + "\n";
    part += rest.substr(0, cut);
    rest.remove_prefix(cut);
    carry.clear();
    if (auto fence = open_fence(part); fence && !rest.empty()) {
      if (part.back() != '\n') part += '\n';
      part += "```";
      carry = fence->size() <= 16 ? *fence : std::string("```");  // a fence line is not worth the room
    }
    if (auto t = trimmed(part); !t.empty() && t != carry) parts.push_back(std::move(t));
  }
  return parts;
}

}  // namespace stargazer::platform::discord
