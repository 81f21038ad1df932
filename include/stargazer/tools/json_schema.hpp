#pragma once
// The subset of JSON Schema that tool parameters use: `type` (object, string, integer,
// number, boolean, array, null, or a list of them), `properties`, `required`,
// `additionalProperties: false`, `enum`, `items`, `minimum`/`maximum`,
// `minLength`/`maxLength`, `maxItems`. Other keywords are ignored. Arguments from the
// model are checked before a tool runs, so handlers see well-typed input.

#include <rapidjson/document.h>

#include <optional>
#include <string>

namespace stargazer::tools {

// nullopt when `value` satisfies `schema`; else what is wrong, naming the argument
// (e.g. "a: expected integer, got string").
std::optional<std::string> validate(const rapidjson::Value& schema, const rapidjson::Value& value);

}  // namespace stargazer::tools
