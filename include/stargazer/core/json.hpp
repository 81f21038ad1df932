#pragma once
// Small JSON helpers shared by logging, metrics and HTTP (RapidJSON stays in .cpp files).

#include <string>
#include <string_view>

namespace stargazer::json {

// Appends `text` to `out` as a quoted JSON string, escaping as RFC 8259 requires.
void append_quoted(std::string& out, std::string_view text);

inline std::string quoted(std::string_view text) {
  std::string out;
  append_quoted(out, text);
  return out;
}

}  // namespace stargazer::json
