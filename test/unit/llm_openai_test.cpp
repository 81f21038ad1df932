// openai_client's pure parts: request encoding, response parsing, names, error excerpts,
// backoff; and echo_client's reply.

#include "stargazer/llm/echo_client.hpp"
#include "stargazer/llm/openai_client.hpp"

#include <catch2/catch.hpp>
#include <rapidjson/document.h>

using namespace stargazer;
using namespace std::chrono_literals;

namespace {

rapidjson::Document parse(const std::string& body) {
  rapidjson::Document d;
  d.Parse(body.data(), body.size());
  INFO(body);
  REQUIRE_FALSE(d.HasParseError());
  return d;
}

llm::message msg(llm::role r, std::string content) {
  llm::message m;
  m.role = r;
  m.content = std::move(content);
  return m;
}

llm::completion ok(const llm::outcome& out) {
  if (const auto* f = std::get_if<llm::failure>(&out)) FAIL(f->detail);
  return std::get<llm::completion>(out);
}

llm::failure failed(const llm::outcome& out) {
  REQUIRE(std::holds_alternative<llm::failure>(out));
  return std::get<llm::failure>(out);
}

}  // namespace

TEST_CASE("encode_request: defaults, overrides and unset sampling", "[llm]") {
  llm::openai_settings defaults;
  defaults.model = "default-model";
  defaults.temperature = 0.7;
  llm::request req;
  req.messages = {msg(llm::role::user, "hi")};
  auto d = parse(llm::encode_request(req, defaults));
  CHECK(std::string(d["model"].GetString()) == "default-model");
  CHECK(d["temperature"].GetDouble() == Approx(0.7));
  CHECK_FALSE(d.HasMember("max_tokens"));
  CHECK_FALSE(d.HasMember("top_p"));
  CHECK_FALSE(d.HasMember("tools"));

  req.model = "m2";
  req.temperature = 1.5;
  req.max_tokens = 10;
  d = parse(llm::encode_request(req, defaults));
  CHECK(std::string(d["model"].GetString()) == "m2");
  CHECK(d["temperature"].GetDouble() == Approx(1.5));
  CHECK(d["max_tokens"].GetInt() == 10);
}

TEST_CASE("encode_request: message shapes of every role", "[llm]") {
  llm::request req;
  auto user = msg(llm::role::user, "what's the weather?");
  user.name = "bob";
  llm::message assistant = msg(llm::role::assistant, "");
  assistant.tool_calls = {{"call_9", "weather", R"({"city":"Oslo"})"}};
  auto tool = msg(llm::role::tool, "rain");
  tool.tool_call_id = "call_9";
  tool.name = "ignored";
  req.messages = {msg(llm::role::system, "sys"), user, assistant, tool, msg(llm::role::assistant, "It rains.")};
  const auto d = parse(llm::encode_request(req, {}));
  const auto& m = d["messages"];
  REQUIRE(m.Size() == 5);
  CHECK(std::string(m[0]["role"].GetString()) == "system");
  CHECK(std::string(m[1]["name"].GetString()) == "bob");
  CHECK(std::string(m[1]["content"].GetString()) == "bob: what's the weather?");  // attribution models read
  CHECK(m[2]["content"].IsNull());
  CHECK(std::string(m[2]["tool_calls"][0]["id"].GetString()) == "call_9");
  CHECK(std::string(m[2]["tool_calls"][0]["type"].GetString()) == "function");
  CHECK(std::string(m[2]["tool_calls"][0]["function"]["arguments"].GetString()) == R"({"city":"Oslo"})");
  CHECK(std::string(m[3]["role"].GetString()) == "tool");
  CHECK(std::string(m[3]["tool_call_id"].GetString()) == "call_9");
  CHECK_FALSE(m[3].HasMember("name"));
  CHECK_FALSE(m[4].HasMember("tool_calls"));
  CHECK(std::string(m[4]["content"].GetString()) == "It rains.");
}

TEST_CASE("encode_request: tools carry their schema as JSON, a bad schema throws", "[llm]") {
  llm::request req;
  req.messages = {msg(llm::role::user, "x")};
  llm::tool_definition t;
  t.name = "lookup";
  req.tools = {t};
  auto d = parse(llm::encode_request(req, {}));
  CHECK(std::string(d["tools"][0]["type"].GetString()) == "function");
  CHECK(d["tools"][0]["function"]["parameters"].IsObject());
  CHECK_FALSE(d["tools"][0]["function"].HasMember("description"));
  req.tools[0].parameters_json = "[1,2]";
  CHECK_THROWS_AS(llm::encode_request(req, {}), std::invalid_argument);
}

TEST_CASE("encode_request: invalid UTF-8 and control characters still make valid JSON", "[llm]") {
  llm::request req;
  req.messages = {msg(llm::role::user, std::string("caf\xC3") + "\x01\"quoted\" \xE2\x82\xAC")};
  const auto d = parse(llm::encode_request(req, {}));
  CHECK(std::string(d["messages"][0]["content"].GetString()) == "caf\xEF\xBF\xBD\x01\"quoted\" \xE2\x82\xAC");
}

TEST_CASE("participant_name: the API's name pattern", "[llm]") {
  CHECK(llm::participant_name("alice_01-x") == "alice_01-x");
  CHECK(llm::participant_name("Ada Lovelace") == "Ada_Lovelace");
  CHECK(llm::participant_name("Zoë@home") == "Zo__home");  // one '_' per character, not per byte
  CHECK(llm::participant_name("").empty());
  CHECK(llm::participant_name(std::string(100, 'a')).size() == 64);
}

TEST_CASE("parse_response: text, null content, content parts, usage", "[llm]") {
  auto c = ok(llm::parse_response(
      R"({"id":"x","model":"gpt","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}})"));
  CHECK(c.content == "Hi!");
  CHECK(c.model == "gpt");
  CHECK(c.finish_reason == "stop");
  CHECK(c.usage.prompt_tokens == 12);
  CHECK(c.usage.completion_tokens == 3);

  c = ok(llm::parse_response(R"({"choices":[{"message":{"content":null},"finish_reason":null}]})"));
  CHECK(c.content.empty());
  CHECK(c.finish_reason.empty());
  CHECK(c.usage.prompt_tokens == 0);

  c = ok(llm::parse_response(
      R"({"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"image"},{"type":"text","text":"b"}]}}]})"));
  CHECK(c.content == "ab");

  // Counts beyond int64 (fuzz_llm_response's find), negative or fractional are clamped.
  c = ok(llm::parse_response(
      R"({"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":-5,"completion_tokens":555555555555555555555555555555555555552}})"));
  CHECK(c.usage.prompt_tokens == 0);
  CHECK(c.usage.completion_tokens == 1'000'000'000'000'000);
  c = ok(llm::parse_response(
      R"({"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":2.5}})"));
  CHECK(c.usage.prompt_tokens == 1'000'000'000'000'000);
  CHECK(c.usage.completion_tokens == 2);
}

TEST_CASE("parse_response: tool calls, with missing ids and object arguments tolerated", "[llm]") {
  const auto c = ok(llm::parse_response(R"({"choices":[{"message":{"content":null,"tool_calls":[
      {"id":"call_a","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}},
      {"type":"function","function":{"name":"g","arguments":{"y":2}}},
      {"id":"","function":{"name":"h"}}]},"finish_reason":"tool_calls"}]})"));
  REQUIRE(c.tool_calls.size() == 3);
  CHECK(c.tool_calls[0].id == "call_a");
  CHECK(c.tool_calls[0].name == "f");
  CHECK(c.tool_calls[0].arguments_json == R"({"x":1})");
  CHECK(c.tool_calls[1].id == "call_1");
  CHECK(c.tool_calls[1].arguments_json == R"({"y":2})");
  CHECK(c.tool_calls[2].id == "call_2");
  CHECK(c.tool_calls[2].arguments_json == "{}");
  CHECK(c.finish_reason == "tool_calls");
}

TEST_CASE("parse_response: what is not a completion is bad_response", "[llm]") {
  using k = llm::failure::kind;
  for (const char* body : {"", "nope", "[]", "{}", R"({"choices":[]})", R"({"choices":[{}]})",
                           R"({"choices":[{"message":"x"}]})", R"({"choices":[{"message":{"content":5}}]})",
                           R"({"choices":[{"message":{"tool_calls":{}}}]})",
                           R"({"choices":[{"message":{"tool_calls":[{"function":{}}]}}]})"}) {
    INFO(body);
    CHECK(failed(llm::parse_response(body)).what == k::bad_response);
  }
  const auto f = failed(llm::parse_response(R"({"error":{"message":"model overloaded","code":502}})"));
  CHECK(f.what == k::bad_response);
  CHECK(f.detail.find("model overloaded (code: 502)") != std::string::npos);
  // Hostile nesting does not exhaust the stack (iterative parser).
  CHECK(failed(llm::parse_response(std::string(100'000, '['))).what == k::bad_response);
}

TEST_CASE("error_excerpt: the API's message, bounded, escaped, without the key", "[llm]") {
  CHECK(llm::error_excerpt(R"({"error":{"message":"Rate limit reached","type":"requests"}})") ==
        "Rate limit reached (type: requests)");
  CHECK(llm::error_excerpt(R"({"error":"plain string"})") == "plain string");
  CHECK(llm::error_excerpt("<html>\n<b>Bad gateway</b>\x01</html>") == "<html> <b>Bad gateway</b>\\x01</html>");
  CHECK(llm::error_excerpt("key sk-123 leaked: sk-123", "sk-123") == "key <redacted> leaked: <redacted>");
  const auto long_one = llm::error_excerpt(std::string(1000, 'e'), {}, 50);
  CHECK(long_one == std::string(50, 'e') + "...");
  CHECK(llm::error_excerpt("\xC3\xA9\xC3\xA9", {}, 3) == "\xC3\xA9...");  // never cuts a character
}

TEST_CASE("backoff_delay: capped exponential with jitter in [d/2, d]", "[llm]") {
  llm::openai_settings s;
  s.backoff_initial = 500ms;
  s.backoff_max = 4000ms;
  CHECK(llm::backoff_delay(s, 1, 0.0) == 250ms);
  CHECK(llm::backoff_delay(s, 1, 0.999) <= 500ms);
  CHECK(llm::backoff_delay(s, 2, 0.0) == 500ms);
  CHECK(llm::backoff_delay(s, 3, 1.0) == 2000ms);
  CHECK(llm::backoff_delay(s, 4, 1.0) == 4000ms);
  CHECK(llm::backoff_delay(s, 40, 1.0) == 4000ms);
  CHECK(llm::backoff_delay(s, 40, 0.0) == 2000ms);
}

TEST_CASE("echo_completion: the last user message, word counts, never tools", "[llm]") {
  llm::request req;
  req.messages = {msg(llm::role::system, "be nice"), msg(llm::role::user, "first one"),
                  msg(llm::role::assistant, "ok"), msg(llm::role::user, "  second  message here "),
                  msg(llm::role::tool, "x")};
  req.tools = {llm::tool_definition{"t", "", "{}"}};
  const auto c = llm::echo_completion(req);
  CHECK(c.content == "  second  message here ");
  CHECK(c.tool_calls.empty());
  CHECK(c.usage.prompt_tokens == 2 + 2 + 1 + 3 + 1);
  CHECK(c.usage.completion_tokens == 3);
  CHECK(llm::echo_completion({}).content == "(no text)");
}

// Found while writing the fuzz target (test/fuzz/fuzz_llm_response.cpp): a 200 KB body
// nesting an error object or object-shaped arguments 100000 levels deep overflowed the
// stack when serialised. Such bodies are now refused before parsing.
TEST_CASE("parse_response refuses deeply nested bodies instead of recursing", "[llm][fuzz]") {
  const std::string deep = std::string(100'000, '[') + std::string(100'000, ']');
  CHECK(failed(llm::parse_response(R"({"error":)" + deep + "}")).detail.find("nested deeper than 64") !=
        std::string::npos);
  CHECK(failed(llm::parse_response(R"({"choices":[{"message":{"tool_calls":[{"function":{"name":"f","arguments":)" +
                                   deep + "}}]}}]}"))
            .what == llm::failure::kind::bad_response);
  // Nesting inside strings does not count: arguments are JSON text in a string.
  auto c = ok(llm::parse_response(R"({"choices":[{"message":{"tool_calls":[{"function":{"name":"f","arguments":")" +
                                  std::string(100, '[') + R"("}}]}}]})"));
  CHECK(c.tool_calls.at(0).arguments_json == std::string(100, '['));
}
