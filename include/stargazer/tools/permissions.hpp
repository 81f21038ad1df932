#pragma once
// Who may use which tool (--tool-permissions): pure data and its parser.

#include <map>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace stargazer::tools {

// Per-tool rules; an empty allow list allows everyone, deny wins over allow.
struct permission {
  std::vector<std::string> allow_platforms, deny_platforms;
  std::vector<std::string> allow_channels, deny_channels;
  std::vector<std::string> allow_users, deny_users;
};

// Parses the --tool-permissions JSON: {"tool": {"allow_platforms": [...], ...}, "*": {...}}
// ("*" applies to every tool). The error names the bad entry.
std::variant<std::map<std::string, permission>, std::string> parse_permissions(std::string_view json);

}  // namespace stargazer::tools
