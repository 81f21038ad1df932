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
  const char* schema = R"({"type":"object","properties":{"a":{"type":"integer","minimum":0},
    "mode":{"type":"string","enum":["x","y"]},"tags":{"type":"array","maxItems":2,"items":{"type":"string"}}},
    "required":["a"],"additionalProperties":false})";
  CHECK_FALSE(check(schema, R"({"a":1})"));
  CHECK_FALSE(check(schema, R"({"a":1,"mode":"y","tags":["p","q"]})"));
  CHECK(*check(schema, R"({})") == "a: missing required argument");
  CHECK(*check(schema, R"({"a":"1"})") == "a: expected integer, got string");
  CHECK(*check(schema, R"({"a":1.5})") == "a: expected integer, got number");
  CHECK(*check(schema, R"({"a":-1})") == "a: must be at least 0");
  CHECK(*check(schema, R"({"a":1,"mode":"z"})") == R"(mode: must be one of "x", "y")");
  CHECK(*check(schema, R"({"a":1,"tags":["p",2]})") == "tags[1]: expected string, got integer");
  CHECK(*check(schema, R"({"a":1,"tags":["p","q","r"]})") == "tags: at most 2 items");
  CHECK(*check(schema, R"({"a":1,"b":2})") == "b: unknown argument");
  CHECK(*check(schema, R"([1])") == "arguments: expected object, got array");
  CHECK_FALSE(check(R"({"type":"number"})", "3"));  // an integer is a number
  CHECK_FALSE(check(R"({"type":["string","null"]})", "null"));
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
