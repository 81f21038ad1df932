#pragma once
// RapidJSON helpers shared by every module that reads or writes JSON documents (HTTP
// bodies, RPC payloads, tool arguments, model responses). Untrusted text is checked for
// nesting depth before RapidJSON recurses into it.

#include "stargazer/core/json.hpp"

#include <rapidjson/document.h>

#include <string>
#include <string_view>
#include <variant>

namespace stargazer::json {

// The text as a JSON object, or a one-line error saying what is wrong with it ("invalid
// JSON at offset 3: ...", "JSON nested deeper than 32 levels", "... must be a JSON object").
std::variant<rapidjson::Document, std::string> parse_object(std::string_view text, unsigned max_depth = 32);

// The member `name` of an object when it is a string, else "" (absent, another type, not an object).
std::string string_member(const rapidjson::Value& value, const char* name);

// Serialises a RapidJSON value.
std::string to_string(const rapidjson::Value& value);

}  // namespace stargazer::json
