#pragma once
// Small text utilities shared across modules.

#include <optional>
#include <string>
#include <string_view>

namespace stargazer {

// Decodes %XX escapes; with `plus_is_space` also '+' (query strings). nullopt on a bad escape.
std::optional<std::string> percent_decode(std::string_view in, bool plus_is_space = false);

// Encodes every byte outside RFC 3986's unreserved set (A-Z a-z 0-9 - . _ ~) as %XX: a
// safe URL path segment or query value.
std::string percent_encode(std::string_view in);

// Lower-cases ASCII letters (HTTP header names).
std::string ascii_lower(std::string_view in);

bool iequals(std::string_view a, std::string_view b);

// The longest prefix of `text` of at most `max_bytes` that does not end inside a UTF-8
// character (for cutting text to a limit without leaving half a character).
std::string_view utf8_prefix(std::string_view text, std::size_t max_bytes);

// Whether `text` names `name` as a whole word: case-insensitive for ASCII, and neither
// side of the match touches a letter, digit, '_' or non-ASCII byte ("Star," and "@star"
// name Star; "Starry" does not).
bool names_as_word(std::string_view text, std::string_view name);

// Standard or URL-safe base64 (padding and line breaks ignored); nullopt on a bad character.
std::optional<std::string> base64_decode(std::string_view in);
std::string base64_encode(std::string_view in);

}  // namespace stargazer
