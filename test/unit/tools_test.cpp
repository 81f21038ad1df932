// The tools' pure parts: JSON-Schema checks, the calculator, time zones, permission rules.

#include "stargazer/tools/builtin.hpp"
#include "stargazer/tools/json_schema.hpp"
#include "stargazer/tools/registry.hpp"

#include "run_coro.hpp"

#include <catch2/catch.hpp>

using namespace stargazer;

namespace {

std::optional<std::string> check(const char* schema, const char* value) {
  rapidjson::Document s, v;
  s.Parse(schema);
  v.Parse(value);
  REQUIRE_FALSE(s.HasParseError());
  REQUIRE_FALSE(v.HasParseError());
  return tools::validate(s, v);
}

double calc(const char* e) {
  auto v = tools::evaluate_expression(e);
  INFO(e);
  REQUIRE(std::holds_alternative<double>(v));
  return std::get<double>(v);
}

std::string calc_error(const char* e) {
  auto v = tools::evaluate_expression(e);
  INFO(e);
  REQUIRE(std::holds_alternative<std::string>(v));
  return std::get<std::string>(v);
}

}  // namespace

TEST_CASE("arguments are checked against the tool's JSON-Schema", "[tools]") {
  // RapidJSON's validator (json_schema.hpp); these messages are what the model sees.
  const char* schema = R"({"type":"object","properties":{"a":{"type":"integer","minimum":0},
    "mode":{"type":"string","enum":["x","y"]},"tags":{"type":"array","maxItems":2,"items":{"type":"string"}}},
    "required":["a"],"additionalProperties":false})";
  CHECK_FALSE(check(schema, R"({"a":1})"));
  CHECK_FALSE(check(schema, R"({"a":1,"mode":"y","tags":["p","q"]})"));
  CHECK(*check(schema, R"({})") == "a: missing required argument");
  CHECK(*check(schema, R"({"a":"1"})") == "a: expected integer, got string");
  CHECK(*check(schema, R"({"a":1.5})") == "a: expected integer, got number");
  // Changed: 1.0 was an integer to the old validator; to RapidJSON (and draft 4) a number
  // written with a fraction is not, so handlers may call GetInt64() on whatever passes.
  CHECK(*check(schema, R"({"a":1.0})") == "a: expected integer, got number");
  CHECK(*check(schema, R"({"a":-1})") == "a: must be at least 0");
  CHECK(*check(schema, R"({"a":1,"mode":"z"})") == R"(mode: must be one of "x", "y")");
  CHECK(*check(schema, R"({"a":1,"tags":["p",2]})") == "tags[1]: expected string, got integer");
  CHECK(*check(schema, R"({"a":1,"tags":["p","q","r"]})") == "tags: at most 2 items");
  CHECK(*check(schema, R"({"a":1,"b":2})") == "b: unknown argument");
  CHECK(*check(schema, R"([1])") == "arguments: expected object, got array");
  CHECK_FALSE(check(schema, R"({"a":18446744073709551615})"));  // beyond int64, still an integer
  CHECK_FALSE(check(R"({"type":"number"})", "3"));  // an integer is a number
  CHECK_FALSE(check(R"({"type":["string","null"]})", "null"));
  // Changed: lengths count code points (RapidJSON), not bytes: "é" is one character.
  CHECK(*check(R"({"type":"string","minLength":2})", R"("é")") == "arguments: must be at least 2 characters");
  // A schema that does not compile refuses everything, saying why.
  CHECK(*check("[1]", "{}") == "the tool's parameter schema is unusable: the schema is not a JSON object");
}

TEST_CASE("a zod-to-json-schema tool schema from an MCP server is checked", "[tools]") {
  auto compiled = tools::compiled_schema::compile(R"({"type":"object","properties":{
    "duration":{"type":"number","default":10,"description":"Seconds to wait"},"steps":{"type":"number"},
    "count":{"type":"integer","exclusiveMinimum":0},"label":{"anyOf":[{"type":"string","maxLength":5},{"type":"null"}]},
    "kind":{"type":"string","const":"fast"},"when":{"type":"string","format":"date-time"}},
    "additionalProperties":false,"$schema":"http://json-schema.org/draft-07/schema#"})");
  REQUIRE(std::holds_alternative<tools::compiled_schema>(compiled));
  const tools::compiled_schema copy = std::get<tools::compiled_schema>(compiled);  // copies share the schema
  const auto run = [&](const char* value) {
    rapidjson::Document v;
    v.Parse(value);
    REQUIRE_FALSE(v.HasParseError());
    return copy.check(v).value_or("ok");
  };
  CHECK(run("{}") == "ok");
  CHECK(run(R"({"duration":2.5,"steps":3,"count":1,"label":null,"kind":"fast","when":"not checked"})") == "ok");
  CHECK(run(R"({"duration":"10"})") == "duration: expected number, got string");
  CHECK(run(R"({"steps":1,"speed":2})") == "speed: unknown argument");
  // Draft 6+ numeric exclusiveMinimum (zod's positive()): RapidJSON 1.1 alone ignores it.
  CHECK(run(R"({"count":0})") == "count: must be more than 0");
  CHECK(run(R"({"label":7})") == "label: expected string or null, got integer");
  CHECK(run(R"({"label":"too long"})") == "label: matches none of the schema's 'anyOf' alternatives");
  CHECK(run(R"({"kind":"slow"})") == R"(kind: must be "fast")");  // const
  // A 2020-12 $schema compiles too (RapidJSON ignores $schema).
  CHECK(std::holds_alternative<tools::compiled_schema>(tools::compiled_schema::compile(
      R"({"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object"})")));
}

TEST_CASE("local $refs are resolved, remote ones never fetched", "[tools]") {
  const auto run = [](const char* schema, const char* value) {
    auto compiled = tools::compiled_schema::compile(schema);
    INFO(schema);
    if (const auto* error = std::get_if<std::string>(&compiled)) FAIL(*error);
    rapidjson::Document v;
    v.Parse(value);
    REQUIRE_FALSE(v.HasParseError());
    return std::get<tools::compiled_schema>(compiled).check(v).value_or("ok");
  };
  // zod-to-json-schema with a name: the root is a $ref into definitions.
  const char* named = R"({"$ref":"#/definitions/Args","definitions":{
    "Args":{"type":"object","properties":{"p":{"$ref":"#/definitions/Point"}},"required":["p"]},
    "Point":{"type":"object","properties":{"x":{"type":"integer"}},"required":["x"]}},
    "$schema":"http://json-schema.org/draft-07/schema#"})";
  CHECK(run(named, R"({"p":{"x":1}})") == "ok");
  CHECK(run(named, R"({"p":{"x":"1"}})") == "p.x: expected integer, got string");
  CHECK(run(named, R"({"p":{}})") == "p.x: missing required argument");
  CHECK(run(named, R"({})") == "p: missing required argument");
  // "#/$defs/..." (2019-09+): RapidJSON 1.1 itself would ignore it ('$' unescaped in a fragment).
  const char* defs = R"({"type":"object","properties":{"a":{"$ref":"#/$defs/n"},"b":{"$ref":"#/$defs/a%20b"}},
    "$defs":{"n":{"type":"integer"},"a b":{"type":"string"}}})";
  CHECK(run(defs, R"({"a":1,"b":"x"})") == "ok");
  CHECK(run(defs, R"({"a":"x"})") == "a: expected integer, got string");
  CHECK(run(defs, R"({"b":1})") == "b: expected string, got integer");
  // Recursive schemas descend with the arguments.
  const char* tree = R"({"type":"object","properties":{"tree":{"$ref":"#/definitions/node"}},"definitions":{
    "node":{"type":"object","properties":{"children":{"type":"array","items":{"$ref":"#/definitions/node"}},"v":{"type":"integer"}}}}})";
  CHECK(run(tree, R"({"tree":{"children":[{"children":[{"v":1}]}]}})") == "ok");
  CHECK(run(tree, R"({"tree":{"children":[{"children":[{"v":"x"}]}]}})") ==
        "tree.children[0].children[0].v: expected integer, got string");
  // A remote $ref is ignored (nothing is fetched) and its siblings apply; a dangling one checks nothing.
  const char* remote = R"({"properties":{"a":{"$ref":"https://example.com/s.json#/n","type":"string"},
    "b":{"$ref":"#/definitions/missing"}}})";
  CHECK(run(remote, R"({"a":"x","b":5})") == "ok");
  CHECK(run(remote, R"({"a":5})") == "a: expected string, got integer");
}

TEST_CASE("anyOf, oneOf and nested objects name the argument's path", "[tools]") {
  const char* schema = R"({"type":"object","properties":{
    "outer":{"type":"object","properties":{"inner":{"type":"string"},
      "list":{"type":"array","items":{"type":"object","properties":{"k":{"type":"boolean"}},"required":["k","j"]}}},
      "required":["inner"]},
    "v":{"anyOf":[{"type":"string"},{"type":"array","items":{"type":"integer"}}]},
    "w":{"oneOf":[{"type":"integer"},{"type":"number","minimum":5}]}}})";
  CHECK_FALSE(check(schema, R"({"outer":{"inner":"x","list":[{"k":true,"j":0}]},"v":[1],"w":1})"));
  CHECK(*check(schema, R"({"outer":{"inner":5}})") == "outer.inner: expected string, got integer");
  CHECK(*check(schema, R"({"outer":{}})") == "outer.inner: missing required argument");
  CHECK(*check(schema, R"({"outer":{"inner":"x","list":[{"k":true,"j":0},{"k":1,"j":0}]}})") ==
        "outer.list[1].k: expected boolean, got integer");
  CHECK(*check(schema, R"({"outer":{"inner":"x","list":[{}]}})") ==
        "outer.list[0].k, outer.list[0].j: missing required arguments");
  CHECK(*check(schema, R"({"v":true})") == "v: expected string or array, got boolean");
  CHECK(*check(schema, R"({"v":["x"]})") == "v: matches none of the schema's 'anyOf' alternatives");
  CHECK(*check(schema, R"({"w":7})") == "w: must match exactly one of the schema's 'oneOf' alternatives");
}

TEST_CASE("schemas that RapidJSON 1.1 cannot take are refused when compiled", "[tools][fuzz]") {
  const auto error = [](std::string_view schema) {
    auto compiled = tools::compiled_schema::compile(schema);
    REQUIRE(std::holds_alternative<std::string>(compiled));
    return std::get<std::string>(compiled);
  };
  // Deep nesting is refused before RapidJSON's recursive parser or schema compiler sees it.
  const std::string deep = std::string(100'000, '[') + std::string(100'000, ']');
  CHECK(error(deep) == "the schema is nested deeper than 64 levels");
  std::string nested;
  for (int i = 0; i < 65; ++i) nested += R"({"not":)";
  nested += "{}" + std::string(65, '}');
  CHECK(error(nested) == "the schema is nested deeper than 64 levels");
  rapidjson::Document parsed, args;  // the same through validate(), parsed without recursion
  parsed.Parse<rapidjson::kParseIterativeFlag>(nested.c_str());
  args.Parse("{}");
  CHECK(*tools::validate(parsed, args) == "the tool's parameter schema is unusable: the schema is nested deeper than 64 levels");
  CHECK(error("[1]") == "the schema is not a JSON object");
  CHECK(error("true") == "the schema is not a JSON object");
  CHECK(error(R"({"type":)").rfind("the schema is not JSON (offset 8: ", 0) == 0);
  CHECK(error("garbage").rfind("the schema is not JSON", 0) == 0);
  // Self-references RapidJSON would follow until the stack overflows.
  CHECK(error(R"({"$ref":"#"})") == "a $ref chain loops or is longer than 64 links");
  CHECK(error(R"({"$ref":"#/definitions/a","definitions":{"a":{"$ref":"#"}}})") ==
        "a $ref chain loops or is longer than 64 links");
  CHECK(error(R"({"anyOf":[{"$ref":"#"},{"type":"string"}]})") ==
        "the schema refers to itself (through $ref, allOf, anyOf, oneOf or not) without descending into the arguments");
}

TEST_CASE("shapes that crash RapidJSON 1.1 are normalised or ignored", "[tools][fuzz]") {
  // Each of these schemas failed an assertion, dereferenced a bad pointer or overflowed the
  // stack inside RapidJSON 1.1 when given to it as they are.
  const auto run = [](const char* schema, const char* value) {
    auto compiled = tools::compiled_schema::compile(schema);
    INFO(schema);
    if (const auto* error = std::get_if<std::string>(&compiled)) FAIL(*error);
    rapidjson::Document v;
    v.Parse(value);
    REQUIRE_FALSE(v.HasParseError());
    return std::get<tools::compiled_schema>(compiled).check(v).value_or("ok");
  };
  // Patterns RapidJSON's engine asserts or loops on are ignored; "a*" matches every string.
  for (const char* pattern : {"(a", "()a", "{1}", "(a*)*", "^a{0,200000}$", "((a{1000}){1000}){1000}", "(?=a)", "a*"})
    CHECK(run((R"({"type":"string","pattern":")" + std::string(pattern) + R"("})").c_str(), R"("bcd")") == "ok");
  // Supported patterns are checked, ECMA escapes translated; the message quotes the pattern.
  CHECK(run(R"({"type":"string","pattern":"^[a-z]+$"})", R"("AB")") == R"(arguments: does not match the pattern "^[a-z]+$")");
  CHECK(run(R"({"type":"string","pattern":"^\\d{4}-\\d{2}$"})", R"("2024-05")") == "ok");
  CHECK(run(R"({"type":"string","pattern":"^\\d{4}-\\d{2}$"})", R"("2024-5")") ==
        R"(arguments: does not match the pattern "^\\d{4}-\\d{2}$")");
  // true/false as schemas (draft 6+), junk where a schema or a list belongs.
  const char* booleans = R"({"type":"object","properties":{"never":false,"any":true},"allOf":[true],"not":false,
    "patternProperties":5,"dependencies":{"a":[1]},"items":[1]})";
  CHECK(run(booleans, R"({"any":1})") == "ok");
  CHECK(run(booleans, R"({"never":1})") == "never: is not allowed");
  CHECK(run(R"({"$ref":"#/type","type":"string"})", "1") == "ok");  // a $ref to a non-schema checks nothing
  CHECK(run(R"({"enum":[{"$ref":"#"},1]})", "2") == "ok");          // an enum RapidJSON would compile as a schema
  // RapidJSON compiles the properties map as a schema too: a property named "dependencies".
  const char* named = R"({"type":"object","properties":{"dependencies":{"anyOf":[{"type":"string"},{"type":"array"}]}}})";
  CHECK(run(named, R"({"dependencies":"x"})") == "ok");
  CHECK(run(named, R"({"dependencies":1})") == "dependencies: expected string or array, got integer");
  // patternProperties with additionalProperties false: RapidJSON 1.1 checked x_1 against a stale schema.
  const char* patterns = R"({"type":"object","properties":{"a":{"type":"integer"}},
    "patternProperties":{"^x_":{"type":"string"}},"additionalProperties":false})";
  CHECK(run(patterns, R"({"a":1,"x_1":"s"})") == "ok");
  CHECK(run(patterns, R"({"x_1":"s"})") == "ok");
  CHECK(run(patterns, R"({"a":1,"y":2})") == "y: unknown argument");
  CHECK(run(patterns, R"({"x_1":2})") == "x_1: fails the schema's 'patternProperties' rule");
  // anyOf fanning out over deep arguments (2^depth validators) is refused, not run.
  const std::string deep_array = std::string(30, '[') + "1" + std::string(30, ']');
  CHECK(run(R"({"items":{"anyOf":[{"$ref":"#"},{"$ref":"#"}]}})", deep_array.c_str()) ==
        "arguments: too costly to check against the tool's schema");
  CHECK(run(R"({"items":{"anyOf":[{"$ref":"#"},{"$ref":"#"}]}})", "[[[[1]]]]") == "ok");
}

TEST_CASE("the calculator evaluates arithmetic and refuses everything else", "[tools]") {
  CHECK(calc("1 + 2 * 3") == 7);
  CHECK(calc("(1 + 2) * 3") == 9);
  CHECK(calc("2 ^ 3 ^ 2") == 512);  // right-associative
  CHECK(calc("-2 ^ 2") == 4);
  CHECK(calc("10 % 4") == 2);
  CHECK(calc("sqrt(16) + abs(-3)") == 7);
  CHECK(calc("max(1, 5, 3) - min(4, 2)") == 3);
  CHECK(calc("1.5e3") == 1500);
  CHECK(calc("round(pi * 100)") == 314);
  CHECK(calc_error("1 / 0").find("division by zero") != std::string::npos);
  CHECK(calc_error("2 +").find("unexpected end") != std::string::npos);
  CHECK(calc_error("system(1)").find("unknown function 'system'") != std::string::npos);
  CHECK(calc_error("x + 1").find("unknown name 'x'") != std::string::npos);
  CHECK(calc_error("sqrt(-1)").find("not a number") != std::string::npos);
  CHECK(calc_error("(1").find("missing ')'") != std::string::npos);
  CHECK(calc_error("1 1").find("unexpected '1'") != std::string::npos);
  CHECK(calc_error(std::string(2000, '(').c_str()).find("longer than 1000") != std::string::npos);
  CHECK(calc_error(std::string(500, '(').c_str()).find("nested too deeply") != std::string::npos);
  CHECK(calc_error("pow(2)").find("takes 2 arguments") != std::string::npos);
}

TEST_CASE("time is told in IANA time zones, unknown or path-like zones are refused", "[tools]") {
  const auto t = std::chrono::system_clock::from_time_t(1700000000);  // 2023-11-14 22:13:20 UTC, a Tuesday
  CHECK(*tools::describe_time(t, "UTC") == "2023-11-14 22:13:20 UTC (UTC+00:00), Tuesday");
  CHECK(*tools::describe_time(t, "Asia/Tokyo") == "2023-11-15 07:13:20 JST (UTC+09:00), Wednesday");
  CHECK(*tools::describe_time(t, "America/New_York") == "2023-11-14 17:13:20 EST (UTC-05:00), Tuesday");
  CHECK_FALSE(tools::describe_time(t, "Mars/Olympus"));
  CHECK_FALSE(tools::describe_time(t, "../../etc/passwd"));
  CHECK_FALSE(tools::describe_time(t, "/etc/passwd"));
  CHECK_FALSE(tools::describe_time(t, ""));
}

TEST_CASE("permission rules: deny wins, a non-empty allow list must name the caller", "[tools]") {
  auto parsed = tools::parse_permissions(
      R"({"calculator":{"deny_platforms":["discord"]},"remember_note":{"allow_users":["u1"]},"*":{"deny_channels":["quiet"]}})");
  REQUIRE(std::holds_alternative<std::map<std::string, tools::permission>>(parsed));
  tools::registry r(tools::registry_settings{.permissions = std::get<0>(parsed)});
  tools::call_context ctx;
  ctx.platform = "redis";
  ctx.channel_id = "c";
  ctx.user_id = "u1";
  CHECK(r.permitted("calculator", ctx));
  CHECK(r.permitted("remember_note", ctx));
  ctx.platform = "discord";
  CHECK_FALSE(r.permitted("calculator", ctx));
  ctx.user_id = "u2";
  CHECK_FALSE(r.permitted("remember_note", ctx));
  CHECK(r.permitted("current_time", ctx));
  ctx.channel_id = "quiet";
  CHECK_FALSE(r.permitted("current_time", ctx));

  CHECK(std::get<std::string>(tools::parse_permissions("[1]")).find("not a JSON object") != std::string::npos);
  CHECK(std::get<std::string>(tools::parse_permissions(R"({"x":{"allow_planets":[]}})")).find("allow_planets") !=
        std::string::npos);
  CHECK(std::get<std::string>(tools::parse_permissions(R"({"x":{"deny_users":"u"}})")).find("must be a list") !=
        std::string::npos);
}

// Model-written arguments nested deeper than the registry's limit are refused before
// RapidJSON's recursive parser sees them (100000 levels overflowed the stack).
TEST_CASE("the registry refuses deeply nested arguments", "[tools][fuzz]") {
  boost::asio::io_context io;
  tools::registry registry;
  registry.add(tools::tool{"echo", "Echoes.", R"({"type":"object"})",
                           [](const rapidjson::Value&, tools::call_context&) -> boost::asio::awaitable<tools::tool_output> {
                             co_return tools::tool_output{"ran", {}};
                           }});
  const std::string deep = R"({"a":)" + std::string(100'000, '[') + std::string(100'000, ']') + "}";
  const tools::call_context ctx;  // named: GCC 12 mishandles prvalue arguments of coroutines
  auto out = test::run_coro(io, registry.execute("echo", deep, ctx));
  CHECK(out.text.find("nested deeper than 32 levels") != std::string::npos);
  const std::string shallow = R"({"a":[[1]]})";
  CHECK(test::run_coro(io, registry.execute("echo", shallow, ctx)).text == "ran");
}
