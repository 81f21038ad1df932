#pragma once
// Parsing JSON request bodies with RapidJSON: malformed input becomes a 400 response
// naming the problem, never an exception.

#include "stargazer/http/message.hpp"

#include <rapidjson/document.h>

#include <string>
#include <string_view>
#include <variant>

namespace stargazer::http {

// The body as a JSON object, or the 400/415 response to send instead. `max_depth` bounds
// nesting so hostile bodies cannot exhaust the stack.
std::variant<rapidjson::Document, response> parse_json_object(const request& req, unsigned max_depth = 32);

// How deeply `text` nests objects and arrays (brackets inside strings do not count); exact
// for valid JSON and for the valid prefix RapidJSON reads before an error. RapidJSON's
// default parser and every walk of a parsed value (to_json, Accept) recurse once per
// level, so untrusted text is checked with this before either.
unsigned json_nesting_depth(std::string_view text);

// Serialises a RapidJSON value.
std::string to_json(const rapidjson::Value& value);

}  // namespace stargazer::http
