#include "stargazer/core/json_value.hpp"

#include <fmt/format.h>
#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>

namespace stargazer::json {

unsigned nesting_depth(std::string_view text) {
  unsigned depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == '}' || c == ']') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

std::variant<rapidjson::Document, std::string> parse_object(std::string_view text, unsigned max_depth) {
  if (nesting_depth(text) > max_depth) return fmt::format("JSON nested deeper than {} levels", max_depth);
  rapidjson::Document doc;
  doc.Parse(text.data(), text.size());  // trailing non-whitespace is an error
  if (doc.HasParseError())
    return fmt::format("invalid JSON at offset {}: {}", doc.GetErrorOffset(),
                       rapidjson::GetParseError_En(doc.GetParseError()));
  if (!doc.IsObject()) return std::string("the body must be a JSON object");
  return doc;
}

std::string to_string(const rapidjson::Value& value) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  value.Accept(writer);
  return {buffer.GetString(), buffer.GetSize()};
}

std::string string_member(const rapidjson::Value& value, const char* name) {
  if (!value.IsObject()) return {};
  const auto it = value.FindMember(name);
  return it != value.MemberEnd() && it->value.IsString()
             ? std::string(it->value.GetString(), it->value.GetStringLength())
             : std::string();
}

}  // namespace stargazer::json
