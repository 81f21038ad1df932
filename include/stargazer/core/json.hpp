#pragma once
// Small JSON helpers without RapidJSON (logging and metrics use them); the RapidJSON
// ones are in json_value.hpp.

#include <string>
#include <string_view>
#include <vector>

namespace stargazer::json {

// Appends `text` to `out` as a quoted JSON string, escaping as RFC 8259 requires.
void append_quoted(std::string& out, std::string_view text);

// How deeply `text` nests objects and arrays (brackets inside strings do not count); exact
// for valid JSON and for the valid prefix RapidJSON reads before an error. RapidJSON's
// default parser and every walk of a parsed value (to_string, Accept) recurse once per
// level, so untrusted text is checked with this before either.
unsigned nesting_depth(std::string_view text);

inline std::string quoted(std::string_view text) {
  std::string out;
  append_quoted(out, text);
  return out;
}

// A JSON array of the strings, in their order.
inline std::string string_array(const std::vector<std::string>& items) {
  std::string out = "[";
  for (const auto& item : items) {
    if (out.size() > 1) out.push_back(',');
    append_quoted(out, item);
  }
  return out + "]";
}

}  // namespace stargazer::json
