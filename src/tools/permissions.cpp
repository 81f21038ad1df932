// The --tool-permissions parser: pure, kept out of registry.cpp (coroutines) so the fuzz
// build compiles it alone.
#include "stargazer/tools/permissions.hpp"

#include <fmt/format.h>
#include <rapidjson/document.h>

#include <algorithm>

namespace stargazer::tools {

std::variant<std::map<std::string, permission>, std::string> parse_permissions(std::string_view json) {
  std::map<std::string, permission> out;
  if (json.empty()) return out;
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError() || !doc.IsObject()) return std::string("--tool-permissions: not a JSON object");
  for (const auto& entry : doc.GetObject()) {
    const std::string tool(entry.name.GetString(), entry.name.GetStringLength());
    if (!entry.value.IsObject()) return "--tool-permissions: '" + tool + "' must map to an object";
    permission p;
    const std::pair<const char*, std::vector<std::string>*> lists[] = {
        {"allow_platforms", &p.allow_platforms}, {"deny_platforms", &p.deny_platforms},
        {"allow_channels", &p.allow_channels},   {"deny_channels", &p.deny_channels},
        {"allow_users", &p.allow_users},         {"deny_users", &p.deny_users}};
    for (const auto& member : entry.value.GetObject()) {
      const std::string_view key(member.name.GetString(), member.name.GetStringLength());
      const auto it = std::find_if(std::begin(lists), std::end(lists), [&](const auto& l) { return key == l.first; });
      if (it == std::end(lists)) return fmt::format("--tool-permissions: '{}' has unknown rule '{}'", tool, key);
      if (!member.value.IsArray()) return fmt::format("--tool-permissions: '{}.{}' must be a list", tool, key);
      for (const auto& v : member.value.GetArray()) {
        if (!v.IsString()) return fmt::format("--tool-permissions: '{}.{}' must hold strings", tool, key);
        it->second->emplace_back(v.GetString(), v.GetStringLength());
      }
    }
    out.emplace(tool, std::move(p));
  }
  return out;
}

}  // namespace stargazer::tools
