#pragma once
// Parsing JSON request bodies (core/json_value.hpp): malformed input becomes a 400
// response naming the problem, never an exception.

#include "stargazer/http/message.hpp"

#include <rapidjson/document.h>

#include <string>
#include <string_view>
#include <variant>

namespace stargazer::http {

// The body as a JSON object, or the 400/415 response to send instead. `max_depth` bounds
// nesting so hostile bodies cannot exhaust the stack.
std::variant<rapidjson::Document, response> parse_json_object(const request& req, unsigned max_depth = 32);

}  // namespace stargazer::http
