#include "stargazer/http/json_body.hpp"

#include "stargazer/core/strings.hpp"

#include <fmt/format.h>
#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace stargazer::http {
unsigned json_nesting_depth(std::string_view text) {
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

std::variant<rapidjson::Document, response> parse_json_object(const request& req, unsigned max_depth) {
  if (const auto type = req.header("content-type"); type) {
    const auto essence = ascii_lower(type->substr(0, type->find(';')));
    if (essence.find("json") == std::string::npos)
      return response::error(415, "unsupported_media_type", "Content-Type must be application/json");
  }
  if (req.body.empty()) return response::error(400, "bad_json", "the request body is empty; a JSON object is required");
  if (json_nesting_depth(req.body) > max_depth)
    return response::error(400, "bad_json", fmt::format("JSON nested deeper than {} levels", max_depth));
  rapidjson::Document doc;
  doc.Parse(req.body.data(), req.body.size());  // trailing non-whitespace is an error
  if (doc.HasParseError())
    return response::error(400, "bad_json",
                           fmt::format("invalid JSON at offset {}: {}", doc.GetErrorOffset(),
                                       rapidjson::GetParseError_En(doc.GetParseError())));
  if (!doc.IsObject()) return response::error(400, "bad_json", "the request body must be a JSON object");
  return doc;
}

std::string to_json(const rapidjson::Value& value) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  value.Accept(writer);
  return {buffer.GetString(), buffer.GetSize()};
}

}  // namespace stargazer::http
