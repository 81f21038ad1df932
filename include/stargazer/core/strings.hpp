#pragma once
// Small text utilities shared across modules.

#include <optional>
#include <string>
#include <string_view>

namespace stargazer {

// Decodes %XX escapes; with `plus_is_space` also '+' (query strings). nullopt on a bad escape.
std::optional<std::string> percent_decode(std::string_view in, bool plus_is_space = false);

// Lower-cases ASCII letters (HTTP header names).
std::string ascii_lower(std::string_view in);

bool iequals(std::string_view a, std::string_view b);

}  // namespace stargazer
