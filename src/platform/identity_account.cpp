// The pure half of platform/identity.hpp: account names and unified ids (no I/O, so
// the REST body parsers in stargazer_pure can use them).

#include "stargazer/platform/identity.hpp"

#include <algorithm>

namespace stargazer::platform {

std::optional<account> parse_account(std::string_view text) {
  const auto colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon > 32) return std::nullopt;
  const auto platform = text.substr(0, colon);
  const auto user_id = text.substr(colon + 1);
  for (const char c : platform)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return std::nullopt;
  if (user_id.empty() || user_id.size() > 256) return std::nullopt;
  for (const char c : user_id) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7F) return std::nullopt;  // spaces and control characters
  }
  return account{std::string(platform), std::string(user_id)};
}

bool valid_unified_id(std::string_view id) {
  if (id.empty() || id.size() > 64 || id == "." || id == "..") return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
}

std::vector<std::string> aliases_of(const unified_identity& identity, std::string_view platform,
                                    std::string_view user_id) {
  const auto self = account{std::string(platform), std::string(user_id)}.text();
  std::vector<std::string> out;
  for (const auto& a : identity.accounts)
    if (a != self) out.push_back(a);
  return out;
}

}  // namespace stargazer::platform
