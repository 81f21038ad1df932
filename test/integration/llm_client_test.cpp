// The LLM providers over real HTTP: openai_client against the fake OpenAI-compatible
// server (replies, tool calls, retries, Retry-After, deadlines, rejections, malformed
// bodies, connection reuse, metrics), echo_client, and the factory.

#include "stargazer/core/config.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/llm/echo_client.hpp"
#include "roles/settings.hpp"
#include "stargazer/llm/openai_client.hpp"

#include "fake_llm_server.hpp"
#include "redis_server.hpp"
#include "run_coro.hpp"

#include <catch2/catch.hpp>
#include <rapidjson/document.h>

using namespace stargazer;
using namespace stargazer::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

constexpr const char* api_key = "sk-test-secret-key";

llm::openai_settings settings_for(const fake_llm_server& fake) {
  llm::openai_settings s;
  s.base_url = fake.base_url();
  s.api_key = api_key;
  s.model = "test-model";
  s.temperature = 0.25;
  s.max_tokens = 64;
  s.top_p = 0.5;
  s.connect_timeout = 1000ms;
  s.timeout = 3000ms;
  s.max_retries = 2;
  s.backoff_initial = 10ms;
  s.backoff_max = 40ms;
  return s;
}

llm::request hello_request() {
  llm::request r;
  r.trace_id = "trace-test";
  llm::message system;
  system.role = llm::role::system;
  system.content = "You are terse.";
  llm::message user;
  user.role = llm::role::user;
  user.content = "say hello please";
  user.name = "Ada Lovelace";
  r.messages = {system, user};
  return r;
}

rapidjson::Document parse(const std::string& body) {
  rapidjson::Document d;
  d.Parse(body.data(), body.size());
  INFO(body);
  REQUIRE_FALSE(d.HasParseError());
  REQUIRE(d.IsObject());
  return d;
}

llm::completion expect_completion(const llm::outcome& out) {
  if (const auto* f = std::get_if<llm::failure>(&out)) FAIL("failure " << llm::to_string(f->what) << ": " << f->detail);
  return std::get<llm::completion>(out);
}

llm::failure expect_failure(const llm::outcome& out) {
  if (const auto* c = std::get_if<llm::completion>(&out)) FAIL("unexpected completion: " << c->content);
  return std::get<llm::failure>(out);
}

bool has_line(const std::string& rendered, const std::string& line) {
  return rendered.find(line + "\n") != std::string::npos;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

TEST_CASE("openai client: a plain reply, and what was sent", "[llm]") {
  fake_llm_server fake;
  fake.push(fake_reply::reply("Hello there, Ada"));
  asio::io_context io;
  metrics::registry metrics;
  llm::openai_client client(io.get_executor(), settings_for(fake), &metrics);
  CHECK(client.provider() == "openai");
  CHECK(client.model() == "test-model");

  const auto c = expect_completion(run_coro(io, client.complete(hello_request())));
  CHECK(c.content == "Hello there, Ada");
  CHECK(c.tool_calls.empty());
  CHECK(c.finish_reason == "stop");
  CHECK(c.model == "test-model");
  CHECK(c.usage.prompt_tokens == 8);  // "You are terse." + "Ada Lovelace: say hello please"
  CHECK(c.usage.completion_tokens == 3);

  const auto sent = fake.requests();
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].authorization == std::string("Bearer ") + api_key);
  CHECK(sent[0].content_type == "application/json");
  const auto body = parse(sent[0].body);
  CHECK(std::string(body["model"].GetString()) == "test-model");
  CHECK(body["temperature"].GetDouble() == Approx(0.25));
  CHECK(body["max_tokens"].GetInt() == 64);
  CHECK(body["top_p"].GetDouble() == Approx(0.5));
  CHECK_FALSE(body.HasMember("tools"));
  const auto& messages = body["messages"];
  REQUIRE(messages.Size() == 2);
  CHECK(std::string(messages[0]["role"].GetString()) == "system");
  CHECK(std::string(messages[0]["content"].GetString()) == "You are terse.");
  CHECK_FALSE(messages[0].HasMember("name"));
  CHECK(std::string(messages[1]["role"].GetString()) == "user");
  CHECK(std::string(messages[1]["content"].GetString()) == "Ada Lovelace: say hello please");  // attribution
  CHECK(std::string(messages[1]["name"].GetString()) == "Ada_Lovelace");

  const auto rendered = metrics.render();
  CHECK(has_line(rendered, R"(stargazer_llm_requests_total{provider="openai",outcome="ok"} 1)"));
  CHECK(has_line(rendered, R"(stargazer_llm_requests_total{provider="openai",outcome="server_error"} 0)"));
  CHECK(has_line(rendered, R"(stargazer_llm_tokens_total{provider="openai",kind="prompt"} 8)"));
  CHECK(has_line(rendered, R"(stargazer_llm_tokens_total{provider="openai",kind="completion"} 3)"));
  CHECK(has_line(rendered, R"(stargazer_llm_request_seconds_count{provider="openai"} 1)"));
}

TEST_CASE("openai client: no Authorization header without a key, request values override the defaults", "[llm]") {
  fake_llm_server fake;
  asio::io_context io;
  auto s = settings_for(fake);
  s.api_key.clear();
  s.top_p.reset();
  llm::openai_client client(io.get_executor(), s);
  auto req = hello_request();
  req.model = "other-model";
  req.temperature = 0.0;
  const auto c = expect_completion(run_coro(io, client.complete(req)));
  CHECK(c.content == "Ada Lovelace: say hello please");  // the fake's fallback echoes the last user message
  CHECK(c.model == "other-model");
  const auto sent = fake.requests();
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].authorization.empty());
  const auto body = parse(sent[0].body);
  CHECK(std::string(body["model"].GetString()) == "other-model");
  CHECK(body["temperature"].GetDouble() == 0.0);
  CHECK(body["max_tokens"].GetInt() == 64);
  CHECK_FALSE(body.HasMember("top_p"));
}

TEST_CASE("openai client: a tool call, then the reply to the tool result", "[llm]") {
  fake_llm_server fake;
  fake.push(fake_reply::tool_calls({{"get_weather", R"({"city":"Paris"})"}}));
  fake.push(fake_reply::reply("It is sunny in Paris."));
  asio::io_context io;
  llm::openai_client client(io.get_executor(), settings_for(fake));

  auto req = hello_request();
  llm::tool_definition weather;
  weather.name = "get_weather";
  weather.description = "Current weather of a city";
  weather.parameters_json = R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]})";
  req.tools = {weather};

  const auto first = expect_completion(run_coro(io, client.complete(req)));
  CHECK(first.content.empty());
  CHECK(first.finish_reason == "tool_calls");
  REQUIRE(first.tool_calls.size() == 1);
  CHECK(first.tool_calls[0].name == "get_weather");
  CHECK(first.tool_calls[0].arguments_json == R"({"city":"Paris"})");
  CHECK(first.tool_calls[0].id == "call_1_0");

  llm::message assistant;
  assistant.role = llm::role::assistant;
  assistant.tool_calls = first.tool_calls;
  llm::message result;
  result.role = llm::role::tool;
  result.tool_call_id = first.tool_calls[0].id;
  result.content = R"({"temperature_c":21,"sky":"clear"})";
  req.messages.push_back(assistant);
  req.messages.push_back(result);
  const auto second = expect_completion(run_coro(io, client.complete(req)));
  CHECK(second.content == "It is sunny in Paris.");
  CHECK(second.tool_calls.empty());

  const auto sent = fake.requests();
  REQUIRE(sent.size() == 2);
  const auto body = parse(sent[1].body);
  const auto& tools = body["tools"];
  REQUIRE(tools.Size() == 1);
  CHECK(std::string(tools[0]["type"].GetString()) == "function");
  CHECK(std::string(tools[0]["function"]["name"].GetString()) == "get_weather");
  CHECK(std::string(tools[0]["function"]["description"].GetString()) == "Current weather of a city");
  REQUIRE(tools[0]["function"]["parameters"].IsObject());  // inserted as JSON, not as a string
  CHECK(std::string(tools[0]["function"]["parameters"]["properties"]["city"]["type"].GetString()) == "string");

  const auto& messages = body["messages"];
  REQUIRE(messages.Size() == 4);
  const auto& call_msg = messages[2];
  CHECK(std::string(call_msg["role"].GetString()) == "assistant");
  CHECK(call_msg["content"].IsNull());
  REQUIRE(call_msg["tool_calls"].Size() == 1);
  const auto& call = call_msg["tool_calls"][0];
  CHECK(std::string(call["id"].GetString()) == "call_1_0");
  CHECK(std::string(call["type"].GetString()) == "function");
  CHECK(std::string(call["function"]["name"].GetString()) == "get_weather");
  REQUIRE(call["function"]["arguments"].IsString());
  CHECK(std::string(call["function"]["arguments"].GetString()) == R"({"city":"Paris"})");
  const auto& tool_msg = messages[3];
  CHECK(std::string(tool_msg["role"].GetString()) == "tool");
  CHECK(std::string(tool_msg["tool_call_id"].GetString()) == "call_1_0");
  CHECK(std::string(tool_msg["content"].GetString()) == R"({"temperature_c":21,"sky":"clear"})");
  CHECK_FALSE(tool_msg.HasMember("name"));
}

TEST_CASE("openai client: 429 with Retry-After waits that long, then succeeds", "[llm]") {
  fake_llm_server fake;
  fake.push(fake_reply::error(429, "1"));
  fake.push(fake_reply::reply("finally"));
  asio::io_context io;
  metrics::registry metrics;
  llm::openai_client client(io.get_executor(), settings_for(fake), &metrics);

  const auto started = std::chrono::steady_clock::now();
  const auto c = expect_completion(run_coro(io, client.complete(hello_request())));
  CHECK(c.content == "finally");
  CHECK(seconds_since(started) >= 0.95);
  const auto sent = fake.requests();
  REQUIRE(sent.size() == 2);
  CHECK(std::chrono::duration<double>(sent[1].received - sent[0].received).count() >= 0.95);
  const auto rendered = metrics.render();
  CHECK(has_line(rendered, R"(stargazer_llm_retries_total{provider="openai",reason="rate_limited"} 1)"));
  CHECK(has_line(rendered, R"(stargazer_llm_requests_total{provider="openai",outcome="ok"} 1)"));
}

TEST_CASE("openai client: a Retry-After beyond the budget ends the call at once", "[llm]") {
  fake_llm_server fake;
  fake.push(fake_reply::error(429, "30"));
  asio::io_context io;
  auto s = settings_for(fake);
  s.retry_budget = 2000ms;
  llm::openai_client client(io.get_executor(), s);
  const auto started = std::chrono::steady_clock::now();
  const auto f = expect_failure(run_coro(io, client.complete(hello_request())));
  CHECK(f.what == llm::failure::kind::rate_limited);
  CHECK(f.http_status == 429);
  CHECK(seconds_since(started) < 1.0);
  CHECK(fake.request_count() == 1);
}

TEST_CASE("openai client: a 500 storm fails as server_error after max_retries + 1 attempts", "[llm]") {
  fake_llm_options options;
  // The error body quotes the key, as some gateways do: the detail must not.
  options.fallback = [](std::string_view) {
    return fake_reply::error(500, {}, std::string(R"({"error":{"message":"upstream exploded for key )") + api_key +
                                          R"(","type":"server_error"}})");
  };
  fake_llm_server fake(options);
  asio::io_context io;
  metrics::registry metrics;
  auto s = settings_for(fake);
  s.max_retries = 3;
  llm::openai_client client(io.get_executor(), s, &metrics);

  const auto f = expect_failure(run_coro(io, client.complete(hello_request())));
  CHECK(f.what == llm::failure::kind::server_error);
  CHECK(f.http_status == 500);
  CHECK(fake.request_count() == 4);
  INFO(f.detail);
  CHECK(f.detail.find("HTTP 500") != std::string::npos);
  CHECK(f.detail.find("upstream exploded") != std::string::npos);
  CHECK(f.detail.find("after 4 attempts") != std::string::npos);
  CHECK(f.detail.find(api_key) == std::string::npos);
  const auto rendered = metrics.render();
  CHECK(has_line(rendered, R"(stargazer_llm_retries_total{provider="openai",reason="server_error"} 3)"));
  CHECK(has_line(rendered, R"(stargazer_llm_requests_total{provider="openai",outcome="server_error"} 1)"));
}

TEST_CASE("openai client: a malformed 200 body is bad_response, not retried", "[llm]") {
  fake_llm_server fake;
  fake.push(fake_reply::malformed());
  asio::io_context io;
  llm::openai_client client(io.get_executor(), settings_for(fake));
  const auto f = expect_failure(run_coro(io, client.complete(hello_request())));
  CHECK(f.what == llm::failure::kind::bad_response);
  CHECK(f.http_status == 200);
  CHECK(f.detail.find("invalid JSON") != std::string::npos);
  CHECK(fake.request_count() == 1);
}

TEST_CASE("openai client: a reply over the size limit is bad_response, not retried", "[llm]") {
  fake_llm_server fake;
  fake.push(fake_reply::reply(std::string(5000, 'w')));
  asio::io_context io;
  auto s = settings_for(fake);
  s.max_response_bytes = 1024;
  llm::openai_client client(io.get_executor(), s);
  const auto f = expect_failure(run_coro(io, client.complete(hello_request())));
  CHECK(f.what == llm::failure::kind::bad_response);
  CHECK(fake.request_count() == 1);
}

TEST_CASE("openai client: a response slower than the deadline is a timeout", "[llm]") {
  fake_llm_server fake;
  fake.push(fake_reply::reply("too late").after(5000ms));
  asio::io_context io;
  auto s = settings_for(fake);
  s.timeout = 300ms;
  s.max_retries = 0;
  llm::openai_client client(io.get_executor(), s);
  const auto started = std::chrono::steady_clock::now();
  const auto f = expect_failure(run_coro(io, client.complete(hello_request())));
  const auto took = seconds_since(started);
  CHECK(f.what == llm::failure::kind::timeout);
  CHECK(f.http_status == 0);
  CHECK(took >= 0.29);
  CHECK(took < 0.3 + 0.7);
}

TEST_CASE("openai client: 401 is rejected without a retry", "[llm]") {
  fake_llm_server fake;
  fake.push(fake_reply::error(401, {}, R"({"error":{"message":"Incorrect API key provided","code":"invalid_api_key"}})"));
  asio::io_context io;
  llm::openai_client client(io.get_executor(), settings_for(fake));
  const auto f = expect_failure(run_coro(io, client.complete(hello_request())));
  CHECK(f.what == llm::failure::kind::rejected);
  CHECK(f.http_status == 401);
  CHECK(f.detail.find("Incorrect API key provided (code: invalid_api_key)") != std::string::npos);
  CHECK(fake.request_count() == 1);
}

TEST_CASE("openai client: connection refused is a transport failure after the retries", "[llm]") {
  asio::io_context io;
  llm::openai_settings s;
  s.base_url = "http://127.0.0.1:" + std::to_string(free_port()) + "/v1";
  s.max_retries = 1;
  s.backoff_initial = 10ms;
  metrics::registry metrics;
  llm::openai_client client(io.get_executor(), s, &metrics);
  const auto f = expect_failure(run_coro(io, client.complete(hello_request())));
  CHECK(f.what == llm::failure::kind::transport);
  CHECK(f.http_status == 0);
  CHECK(f.detail.find("refused") != std::string::npos);
  CHECK(has_line(metrics.render(), R"(stargazer_llm_retries_total{provider="openai",reason="transport"} 1)"));
}

TEST_CASE("openai client: consecutive calls reuse one keep-alive connection", "[llm]") {
  fake_llm_server fake;
  asio::io_context io;
  llm::openai_client client(io.get_executor(), settings_for(fake));
  for (int i = 0; i < 3; ++i) expect_completion(run_coro(io, client.complete(hello_request())));
  CHECK(fake.request_count() == 3);
  CHECK(fake.open_connections() == 1);
}

TEST_CASE("openai client: a bad tool schema is rejected before sending", "[llm]") {
  fake_llm_server fake;
  asio::io_context io;
  llm::openai_client client(io.get_executor(), settings_for(fake));
  auto req = hello_request();
  llm::tool_definition broken;
  broken.name = "broken";
  broken.parameters_json = "{not json";
  req.tools = {broken};
  const auto f = expect_failure(run_coro(io, client.complete(req)));
  CHECK(f.what == llm::failure::kind::rejected);
  CHECK(f.detail.find("broken") != std::string::npos);
  CHECK(fake.request_count() == 0);
}

TEST_CASE("echo client: repeats the last user message and honours its delay without blocking", "[llm]") {
  asio::io_context io;
  metrics::registry metrics;
  llm::echo_client client(io.get_executor(), llm::echo_settings{200ms}, &metrics);
  CHECK(client.provider() == "echo");
  CHECK(client.model() == "echo");

  auto req = hello_request();
  llm::tool_definition tool;
  tool.name = "never_called";
  req.tools = {tool};
  llm::request empty;
  llm::message blank;
  blank.role = llm::role::user;
  empty.messages = {blank};

  // Two overlapping completions: both wait on their timers at the same time.
  std::optional<llm::outcome> a, b;
  const auto started = std::chrono::steady_clock::now();
  asio::co_spawn(io, client.complete(req), [&](std::exception_ptr, llm::outcome o) { a = std::move(o); });
  asio::co_spawn(io, client.complete(empty), [&](std::exception_ptr, llm::outcome o) { b = std::move(o); });
  io.run_for(2s);
  const auto took = seconds_since(started);
  REQUIRE(a);
  REQUIRE(b);
  const auto ca = expect_completion(*a);
  const auto cb = expect_completion(*b);
  CHECK(ca.content == "say hello please");
  CHECK(ca.tool_calls.empty());
  CHECK(ca.finish_reason == "stop");
  CHECK(ca.usage.prompt_tokens == 6);
  CHECK(ca.usage.completion_tokens == 3);
  CHECK(cb.content == "(no text)");
  CHECK(took >= 0.19);
  CHECK(took < 0.39);  // overlapped, not 2 x 200 ms
  CHECK(has_line(metrics.render(), R"(stargazer_llm_requests_total{provider="echo",outcome="ok"} 2)"));
}

TEST_CASE("llm factory: the provider follows the configuration", "[llm]") {
  asio::io_context io;
  config cfg;
  cfg.llm_provider = "auto";
  CHECK(llm::make_client(cfg, io.get_executor(), nullptr)->provider() == "echo");
  cfg.llm_api_key = "sk-x";
  const auto openai = llm::make_client(cfg, io.get_executor(), nullptr);
  CHECK(openai->provider() == "openai");
  CHECK(openai->model() == cfg.llm_model);
  cfg.llm_provider = "echo";
  CHECK(llm::make_client(cfg, io.get_executor(), nullptr)->provider() == "echo");
  cfg.llm_provider = "openai";
  cfg.llm_base_url = "ftp://example.com";
  CHECK_THROWS_AS(llm::make_client(cfg, io.get_executor(), nullptr), std::invalid_argument);
  cfg.llm_provider = "nonsense";
  CHECK_THROWS_AS(llm::make_client(cfg, io.get_executor(), nullptr), std::invalid_argument);

  cfg = config{};
  cfg.llm_temperature = 0.3;
  cfg.llm_timeout_seconds = 1.5;
  cfg.llm_max_retries = 7;
  const auto s = llm::openai_settings_from(cfg);
  CHECK(s.temperature == 0.3);
  CHECK(s.max_tokens == cfg.llm_max_tokens);
  CHECK(s.timeout == 1500ms);
  CHECK(s.max_retries == 7);
}

TEST_CASE("fake LLM server: serves the echo fallback to any OpenAI client and counts requests", "[llm]") {
  fake_llm_options options;
  options.fallback = [](std::string_view text) { return fake_reply::reply("echo: " + std::string(text)); };
  fake_llm_server fake(options);
  CHECK(fake.base_url() == "http://127.0.0.1:" + std::to_string(fake.port()) + "/v1");
  asio::io_context io;
  llm::openai_client client(io.get_executor(), settings_for(fake));
  const auto c = expect_completion(run_coro(io, client.complete(hello_request())));
  CHECK(c.content == "echo: Ada Lovelace: say hello please");
  CHECK(fake.wait_for_requests(1, 100ms));
  CHECK_FALSE(fake.wait_for_requests(2, 50ms));
  CHECK(fake.script_left() == 0);
}
