#pragma once
// The tool registry: a tool is a name, a description, a
// JSON-Schema of its parameters and a coroutine handler. execute() checks the caller's
// permission (allow/deny by platform, channel and user, from the configuration), parses
// and validates the model's arguments against the schema, runs the handler under a
// deadline and cuts its result to a size limit. Every failure comes back as a result
// text starting with "error:" for the model to read; nothing throws out of execute().

#include "stargazer/bus/envelope.hpp"
#include "stargazer/tools/call_context.hpp"
#include "stargazer/tools/permissions.hpp"
#include "stargazer/llm/chat.hpp"

#include <utility>
#include <boost/asio/awaitable.hpp>
#include <rapidjson/document.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>


namespace stargazer::tools {

// A handler's answer: text for the model, and files to send to the channel.
struct tool_output {
  std::string text;
  std::vector<bus::attachment> media;
};

// A handler reports a failure the model should read by throwing it.
struct tool_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using tool_handler = std::function<boost::asio::awaitable<tool_output>(const rapidjson::Value& args, call_context& ctx)>;

struct tool {
  std::string name;
  std::string description;
  std::string parameters_json = R"({"type":"object","properties":{}})";
  tool_handler handler;
  // Tools that need the live platform connection run on the gateway (execute_tool RPC).
  bool runs_on_gateway = false;
  std::optional<std::chrono::milliseconds> deadline;  // unset: the registry's default
  // Where the tool comes from: "" for the built-in tools, "mcp:{server}" for an MCP server's.
  std::string origin;
};

// A registered tool as `stargazer tools list` and the catalog show it.
struct tool_listing {
  std::string name;
  std::string description;
  std::string origin;  // "built-in" or "mcp:{server}"
  bool available = true;
  std::string unavailable_reason;
};

struct registry_settings {
  std::chrono::milliseconds default_deadline{10'000};
  std::size_t max_result_bytes = 16 * 1024;
  std::size_t max_media_bytes = 8 * 1024 * 1024;
  std::map<std::string, permission> permissions;
};

class registry {
public:
  explicit registry(registry_settings settings = {});
  ~registry();
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  // Throws std::invalid_argument for a duplicate name or a schema that is not a JSON object.
  void add(tool t);
  // Replaces every tool of `origin` by `tools` (a changed MCP tool list). A tool whose
  // name another origin holds, or whose schema does not compile, is left out: one line
  // each in the result says why.
  std::vector<std::string> replace_origin(const std::string& origin, std::vector<tool> tools);
  // The tools of an origin whose server is down are not offered and fail when called.
  void set_origin_available(const std::string& origin, bool available, std::string reason = {});
  std::vector<tool_listing> list() const;
  void set_permissions(std::map<std::string, permission> permissions);
  const tool* find(std::string_view name) const;
  bool permitted(std::string_view name, const call_context& ctx) const;

  // The tools `ctx` may use, in the OpenAI tools format's terms.
  std::vector<llm::tool_definition> definitions(const call_context& ctx) const;

  // Runs a tool here (see the header comment); the text starts with "error:" on failure.
  // By value: a coroutine keeps its arguments, so callers may pass temporaries.
  boost::asio::awaitable<tool_output> execute(std::string name, std::string args_json, call_context ctx) const;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

// "error: <what>" — the form every failure takes in a tool result.
inline std::string error_text(std::string_view what) { return "error: " + std::string(what); }

}  // namespace stargazer::tools
