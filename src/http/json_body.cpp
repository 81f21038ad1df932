#include "stargazer/http/json_body.hpp"

#include "stargazer/core/json_value.hpp"
#include "stargazer/core/strings.hpp"

#include <fmt/format.h>

namespace stargazer::http {
std::variant<rapidjson::Document, response> parse_json_object(const request& req, unsigned max_depth) {
  if (const auto type = req.header("content-type"); type) {
    const auto essence = ascii_lower(type->substr(0, type->find(';')));
    if (essence.find("json") == std::string::npos)
      return response::error(415, "unsupported_media_type", "Content-Type must be application/json");
  }
  if (req.body.empty()) return response::error(400, "bad_json", "the request body is empty; a JSON object is required");
  auto parsed = json::parse_object(req.body, max_depth);
  if (auto* error = std::get_if<std::string>(&parsed)) return response::error(400, "bad_json", *error);
  return std::get<rapidjson::Document>(std::move(parsed));
}

}  // namespace stargazer::http
