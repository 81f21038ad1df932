#pragma once
// The Model Context Protocol's messages, without I/O (docs/tools.md, "MCP servers"):
// JSON-RPC 2.0 framing, the initialize handshake, tools/list pages, tools/call results
// and the configuration of the servers. Revision 2025-11-25 of the specification, with
// the earlier revisions a server may answer with.

#include <rapidjson/document.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace stargazer::tools::mcp {

inline constexpr std::string_view latest_protocol_version = "2025-11-25";

// The revisions this client speaks (an initialize answer naming another is refused).
bool supported_protocol_version(std::string_view version);

// JSON-RPC 2.0 error codes used here.
namespace rpc_error {
inline constexpr int parse_error = -32700;
inline constexpr int invalid_request = -32600;
inline constexpr int method_not_found = -32601;
inline constexpr int invalid_params = -32602;
}  // namespace rpc_error

// One JSON-RPC message as received.
struct message {
  enum class kind { request, notification, result, error };
  kind type = kind::notification;
  std::string method;                    // requests and notifications
  std::string id_json;                   // requests and answers: the id as JSON text
  std::optional<std::int64_t> number_id; // an answer's id when it is an integer (ours are)
  int error_code = 0;                    // kind::error
  std::string error_message;             // kind::error
  // The parsed message; params()/result() point into it.
  std::shared_ptr<const rapidjson::Document> document;

  const rapidjson::Value* params() const;  // null when absent
  const rapidjson::Value* result() const;  // kind::result only
};

// Decodes one line or body: a message object, or (older revisions over HTTP) an array of
// them. The error says what is wrong ("not JSON at offset 3", "no 'jsonrpc': '2.0'", ...).
// Untrusted text: nesting is checked before RapidJSON recurses.
std::variant<std::vector<message>, std::string> decode(std::string_view text);

// Encoders; `params_json`/`result_json` are JSON texts ("" leaves params out).
std::string encode_request(std::int64_t id, std::string_view method, std::string_view params_json = {});
std::string encode_notification(std::string_view method, std::string_view params_json = {});
std::string encode_result(std::string_view id_json, std::string_view result_json);
std::string encode_error(std::string_view id_json, int code, std::string_view text);

// The initialize request's params: this client's version, no client capabilities (no
// roots, sampling or elicitation: a server asking for them is told the method is unknown).
std::string initialize_params(std::string_view client_version);

struct server_info {
  std::string protocol_version;
  std::string name;
  std::string version;
  bool tools = false;               // the server offers tools
  bool tools_list_changed = false;  // ... and tells when their list changes
  std::string instructions;
};
std::variant<server_info, std::string> parse_initialize_result(const rapidjson::Value& result);

// A tool as a server describes it.
struct tool_descriptor {
  std::string name;
  std::string title;
  std::string description;
  std::string input_schema_json;
};
struct tool_page {
  std::vector<tool_descriptor> tools;
  std::string next_cursor;          // "" on the last page
  std::vector<std::string> skipped; // entries that were not tools, and why
};
std::variant<tool_page, std::string> parse_tools_list(const rapidjson::Value& result);
std::string tools_list_params(std::string_view cursor);

// What a tools/call answered, as text for the model: text items as they are; images,
// audio, embedded resources and resource links summarised with their type and size.
struct call_outcome {
  std::string text;
  bool is_error = false;  // the tool reported a failure (isError)
};
std::variant<call_outcome, std::string> parse_call_result(const rapidjson::Value& result);
std::string call_params(std::string_view tool_name, std::string_view arguments_json);
std::string cancelled_params(std::int64_t request_id, std::string_view reason);

// The registry name of a server's tool: "{server}__{tool}", within the model API's name
// rule (^[a-zA-Z0-9_-]{1,64}$). nullopt when the combination breaks the rule.
std::optional<std::string> registry_name(std::string_view server, std::string_view tool);

// One configured server (--mcp-servers): a command (stdio) or a URL (Streamable HTTP).
struct server_config {
  std::string name;
  std::string command;
  std::vector<std::string> args;
  // "NAME" passes our variable through (when set); "NAME=value" sets it.
  std::vector<std::string> env;
  std::string cwd;
  std::string url;
  std::map<std::string, std::string> headers;
  std::string bearer_token_env;  // an environment variable holding a bearer token
  std::chrono::milliseconds timeout{30'000};  // per tool call
  bool enabled = true;

  bool is_stdio() const { return !command.empty(); }
};

// Parses the --mcp-servers JSON: {"name": {"command": ..., "args": [...], "env": [...],
// "cwd": ..., "timeout": seconds, "enabled": bool} | {"url": ..., "headers": {...},
// "bearer_token_env": ...}}. The error names the server and the field.
std::variant<std::vector<server_config>, std::string> parse_server_configs(std::string_view json);

// The child's environment for a stdio server: only what `env` names, looked up in ours.
std::vector<std::string> child_environment(const server_config& config,
                                           const std::function<const char*(const char*)>& lookup);

}  // namespace stargazer::tools::mcp
