// MCP's messages without I/O: JSON-RPC decoding, the handshake, tool pages, call
// results, names and the servers' configuration.

#include "stargazer/tools/mcp/protocol.hpp"

#include <catch2/catch.hpp>

#include <cstring>

using namespace stargazer::tools::mcp;

namespace {

std::vector<message> decoded(std::string_view text) {
  auto d = decode(text);
  INFO(text);
  REQUIRE(std::holds_alternative<std::vector<message>>(d));
  return std::get<std::vector<message>>(d);
}

std::string refused(std::string_view text) {
  auto d = decode(text);
  INFO(text);
  REQUIRE(std::holds_alternative<std::string>(d));
  return std::get<std::string>(d);
}

rapidjson::Document doc(const char* text) {
  rapidjson::Document d;
  d.Parse(text);
  REQUIRE_FALSE(d.HasParseError());
  return d;
}

}  // namespace

TEST_CASE("JSON-RPC messages are told apart and checked", "[mcp]") {
  auto m = decoded(R"({"jsonrpc":"2.0","id":7,"result":{"tools":[]}})");
  REQUIRE(m.size() == 1);
  CHECK(m[0].type == message::kind::result);
  CHECK(m[0].number_id == 7);
  REQUIRE(m[0].result() != nullptr);
  CHECK(m[0].result()->IsObject());

  m = decoded(R"({"jsonrpc":"2.0","id":"abc","method":"ping"})");
  CHECK(m[0].type == message::kind::request);
  CHECK(m[0].id_json == "\"abc\"");
  CHECK_FALSE(m[0].number_id);

  m = decoded(R"({"jsonrpc":"2.0","method":"notifications/tools/list_changed"})");
  CHECK(m[0].type == message::kind::notification);
  CHECK(m[0].method == "notifications/tools/list_changed");

  m = decoded(R"({"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"Unknown tool: x"}})");
  CHECK(m[0].type == message::kind::error);
  CHECK(m[0].error_code == -32602);
  CHECK(m[0].error_message == "Unknown tool: x");

  m = decoded(R"([{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","method":"n"}])");
  REQUIRE(m.size() == 2);
  CHECK(m[0].number_id == 1);
  CHECK(m[0].result() != nullptr);
  CHECK(m[1].type == message::kind::notification);

  CHECK(refused("Starting server on stdio...").find("not JSON") == 0);
  CHECK(refused(R"({"id":1,"result":{}})") == R"(no "jsonrpc": "2.0")");
  CHECK(refused(R"({"jsonrpc":"2.0"})") == "neither a method nor an id");
  CHECK(refused(R"({"jsonrpc":"2.0","id":1})") == "an answer with neither a result nor an error");
  CHECK(refused(R"({"jsonrpc":"2.0","id":{},"result":{}})") == "the id is neither a string nor a number");
  CHECK(refused(R"({"jsonrpc":"2.0","id":1,"error":{"message":"x"}})") == "an error without an integer code");
  CHECK(refused(R"({"jsonrpc":"2.0","method":5})") == "the method is not a string");
  CHECK(refused(R"({"jsonrpc":"2.0","method":"m","params":3})") == "params are neither an object nor an array");
  CHECK(refused("[]") == "an empty batch");
  CHECK(refused("\"\xff\"").find("not JSON") == 0);  // invalid UTF-8
  CHECK(refused(std::string(100, '[') + std::string(100, ']')).find("deeper than 64") != std::string::npos);
}

TEST_CASE("messages are encoded as one line of JSON-RPC", "[mcp]") {
  CHECK(encode_request(4, "tools/list", "{}") == R"({"jsonrpc":"2.0","id":4,"method":"tools/list","params":{}})");
  CHECK(encode_request(5, "ping") == R"({"jsonrpc":"2.0","id":5,"method":"ping"})");
  CHECK(encode_notification("notifications/initialized") == R"({"jsonrpc":"2.0","method":"notifications/initialized"})");
  CHECK(encode_result("\"x\"", "{}") == R"({"jsonrpc":"2.0","id":"x","result":{}})");
  CHECK(encode_error("", -32601, "no \"such\"\nmethod") ==
        R"({"jsonrpc":"2.0","id":null,"error":{"code":-32601,"message":"no \"such\"\nmethod"}})");
  CHECK(call_params("echo", R"({"text":"hi"})") == R"({"name":"echo","arguments":{"text":"hi"}})");
  CHECK(cancelled_params(9, "late") == R"({"requestId":9,"reason":"late"})");
  CHECK(tools_list_params("") == "{}");
  CHECK(tools_list_params("p2") == R"({"cursor":"p2"})");
  const auto init = decoded(encode_request(1, "initialize", initialize_params("1.2.3")));
  const auto* p = init[0].params();
  REQUIRE(p != nullptr);
  CHECK(std::string((*p)["protocolVersion"].GetString()) == "2025-11-25");
  CHECK(std::string((*p)["clientInfo"]["version"].GetString()) == "1.2.3");
  CHECK((*p)["capabilities"].ObjectEmpty());
}

TEST_CASE("the initialize answer negotiates the revision", "[mcp]") {
  auto ok = parse_initialize_result(doc(
      R"({"protocolVersion":"2025-06-18","capabilities":{"tools":{"listChanged":true}},"serverInfo":{"name":"s","version":"2"}})"));
  REQUIRE(std::holds_alternative<server_info>(ok));
  const auto& info = std::get<server_info>(ok);
  CHECK(info.protocol_version == "2025-06-18");
  CHECK(info.tools);
  CHECK(info.tools_list_changed);
  CHECK(info.name == "s");
  auto no_tools = parse_initialize_result(doc(R"({"protocolVersion":"2024-11-05","capabilities":{}})"));
  CHECK_FALSE(std::get<server_info>(no_tools).tools);
  auto future = parse_initialize_result(doc(R"({"protocolVersion":"2031-01-01","capabilities":{}})"));
  REQUIRE(std::holds_alternative<std::string>(future));
  CHECK(std::get<std::string>(future).find("'2031-01-01'") != std::string::npos);
  CHECK(std::holds_alternative<std::string>(parse_initialize_result(doc(R"({"capabilities":{}})"))));
}

TEST_CASE("tool pages keep the tools and say what they skipped", "[mcp]") {
  auto page = parse_tools_list(doc(R"({"tools":[
      {"name":"echo","description":"Echoes","inputSchema":{"type":"object"}},
      {"name":"t2","title":"Title","inputSchema":{"type":"object","properties":{"a":{"type":"string"}}}},
      {"description":"nameless","inputSchema":{}},
      {"name":"bad","inputSchema":"no"}],"nextCursor":"c2"})"));
  REQUIRE(std::holds_alternative<tool_page>(page));
  const auto& p = std::get<tool_page>(page);
  REQUIRE(p.tools.size() == 2);
  CHECK(p.tools[0].name == "echo");
  CHECK(p.tools[0].input_schema_json == R"({"type":"object"})");
  CHECK(p.tools[1].title == "Title");
  CHECK(p.skipped.size() == 2);
  CHECK(p.next_cursor == "c2");
  CHECK(std::holds_alternative<std::string>(parse_tools_list(doc(R"({"tool":[]})"))));
}

TEST_CASE("call results become text for the model", "[mcp]") {
  auto r = parse_call_result(doc(R"({"content":[
      {"type":"text","text":"first"},
      {"type":"image","data":"AAAAAAAA","mimeType":"image/png"},
      {"type":"resource","resource":{"uri":"file:///a.txt","mimeType":"text/plain","text":"inside"}},
      {"type":"resource","resource":{"uri":"file:///b.bin","blob":"AAAA"}},
      {"type":"resource_link","uri":"file:///c","name":"c","mimeType":"text/csv","size":2048},
      {"type":"hologram"}]})"));
  REQUIRE(std::holds_alternative<call_outcome>(r));
  const auto& out = std::get<call_outcome>(r);
  CHECK_FALSE(out.is_error);
  CHECK(out.text ==
        "first\n[image: image/png, 6 bytes]\n[resource file:///a.txt (text/plain)]\ninside\n"
        "[resource file:///b.bin: binary, 3 bytes]\n[link c: file:///c, text/csv, 2.0 KiB]\n[hologram content]");
  auto failed = parse_call_result(doc(R"({"content":[{"type":"text","text":"no such file"}],"isError":true})"));
  CHECK(std::get<call_outcome>(failed).is_error);
  auto structured = parse_call_result(doc(R"({"content":[],"structuredContent":{"sum":3}})"));
  CHECK(std::get<call_outcome>(structured).text == R"({"sum":3})");
  CHECK(std::holds_alternative<std::string>(parse_call_result(doc(R"({"content":"text"})"))));
}

TEST_CASE("a server's tools are named {server}__{tool} within the model API's rule", "[mcp]") {
  CHECK(registry_name("everything", "get-sum") == "everything__get-sum");
  CHECK_FALSE(registry_name("fs", "read.file"));
  CHECK_FALSE(registry_name("fs", std::string(70, 'a')));
  CHECK_FALSE(registry_name("fs", "read file"));
}

TEST_CASE("the MCP servers option is parsed, with errors naming the server and the field", "[mcp]") {
  auto ok = parse_server_configs(R"({
      "everything": {"command": "node", "args": ["x.js", "stdio"], "env": ["PATH", "MODE=test"], "cwd": "/tmp", "timeout": 2.5},
      "remote": {"url": "http://127.0.0.1:3001/mcp", "headers": {"X-Team": "a"}, "bearer_token_env": "TOKEN", "enabled": false}})");
  REQUIRE(std::holds_alternative<std::vector<server_config>>(ok));
  const auto& list = std::get<std::vector<server_config>>(ok);
  REQUIRE(list.size() == 2);
  CHECK(list[0].name == "everything");
  CHECK(list[0].is_stdio());
  CHECK(list[0].args == std::vector<std::string>{"x.js", "stdio"});
  CHECK(list[0].timeout == std::chrono::milliseconds(2500));
  CHECK(list[1].url == "http://127.0.0.1:3001/mcp");
  CHECK(list[1].headers.at("X-Team") == "a");
  CHECK_FALSE(list[1].enabled);
  CHECK(std::get<std::vector<server_config>>(parse_server_configs("")).empty());

  const auto error = [](const char* text) {
    auto r = parse_server_configs(text);
    INFO(text);
    REQUIRE(std::holds_alternative<std::string>(r));
    return std::get<std::string>(r);
  };
  CHECK(error("[1]") == "--mcp-servers: the body must be a JSON object");
  CHECK(error(R"({"a__b": {"command": "x"}})").find("'a__b' is not a server name") != std::string::npos);
  CHECK(error(R"({"s": {}})") == "--mcp-servers: server 's' needs exactly one of 'command' (stdio) and 'url' (HTTP)");
  CHECK(error(R"({"s": {"command": "x", "url": "http://h"}})").find("exactly one") != std::string::npos);
  CHECK(error(R"({"s": {"command": 5}})") == "--mcp-servers: server 's' 'command' is not a string");
  CHECK(error(R"({"s": {"command": "x", "args": "a b"}})") == "--mcp-servers: server 's' 'args' is not a list of strings");
  CHECK(error(R"({"s": {"command": "x", "timeout": 0}})").find("'timeout'") != std::string::npos);
  CHECK(error(R"({"s": {"command": "x", "shell": true}})") == "--mcp-servers: server 's' has an unknown field 'shell'");
  CHECK(error(R"({"s": {"url": "ftp://h"}})").find("http:// or https://") != std::string::npos);
  CHECK(error(R"({"s": {"command": "x", "headers": {"a": "b"}}})").find("belong to HTTP servers") != std::string::npos);
  CHECK(error(R"({"s": {"url": "http://h", "args": ["a"]}})").find("belong to stdio servers") != std::string::npos);
  CHECK(error(R"({"s": {"command": "x", "env": ["A B=1"]}})").find("not NAME or NAME=value") != std::string::npos);
}

TEST_CASE("a stdio server's environment holds only what its configuration names", "[mcp]") {
  server_config c;
  c.env = {"HOME", "MISSING", "MODE=test", "EMPTY="};
  const auto env = child_environment(c, [](const char* name) -> const char* {
    return std::strcmp(name, "HOME") == 0 ? "/home/bot" : nullptr;
  });
  CHECK(env == std::vector<std::string>{"HOME=/home/bot", "MODE=test", "EMPTY="});
}
