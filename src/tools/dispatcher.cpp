#include "stargazer/tools/dispatcher.hpp"

#include "stargazer/core/json.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/json_value.hpp"
#include "stargazer/platform/platform_adapter.hpp"
#include "stargazer/tools/remote.hpp"

#include <fmt/format.h>

namespace stargazer::tools {

namespace asio = boost::asio;

dispatcher::dispatcher(const registry& tools, execution_mode mode, remote_tool_client* remote)
    : tools_(tools), mode_(mode), remote_(remote) {
  if (mode_ == execution_mode::remote && remote_ == nullptr)
    throw std::invalid_argument("remote tool execution needs a remote_tool_client");
}

std::vector<llm::tool_definition> dispatcher::offered(const call_context& ctx) const {
  return tools_.definitions(ctx);
}

asio::awaitable<std::string> dispatcher::run(const llm::tool_call& call, const call_context& ctx) {
  auto context = ctx;
  context.adapter = nullptr;  // a tool run here or on the tools service does not reach the live adapter
  const auto* t = tools_.find(call.name);
  tool_output out;
  if (t != nullptr && t->runs_on_gateway) {
    if (!tools_.permitted(call.name, context)) co_return error_text("permission denied: '" + call.name + "' is not allowed here");
    std::string ctx_json = "{";
    for (const auto& [k, v] : context.to_map()) ctx_json += (ctx_json.size() > 1 ? "," : "") + json::quoted(k) + ":" + json::quoted(v);
    ctx_json += "}";
    // The gateway validates the arguments again; what is sent must be a JSON object.
    // Nesting first: RapidJSON's default parser recurses once per level (model-written text).
    if (json::nesting_depth(call.arguments_json) > 32) co_return error_text("the arguments are nested too deeply");
    rapidjson::Document args;
    args.Parse(call.arguments_json.c_str(), call.arguments_json.size());
    if (args.HasParseError() || !args.IsObject()) co_return error_text("the arguments are not a JSON object");
    auto r = co_await ctx.adapter->execute_tool(ctx.channel_id, call.name, call.arguments_json, ctx_json);
    if (!r) co_return error_text("'" + call.name + "' could not run on the gateway: " + r.error().message());
    co_return *r;
  }
  if (mode_ == execution_mode::remote) {
    const auto deadline = t != nullptr && t->deadline ? *t->deadline : std::chrono::milliseconds(10'000);
    out = co_await remote_->call(call.name, call.arguments_json, context, deadline);
  } else {
    out = co_await tools_.execute(call.name, call.arguments_json, context);
  }
  for (const auto& file : out.media) {
    platform::send_context send;
    send.trace_id = ctx.trace_id;
    auto sent = co_await ctx.adapter->send_file(ctx.channel_id, file.data, file.filename, file.mimetype, send);
    if (!sent) out.text += fmt::format("\n[{} was not sent: {}]", file.filename, sent.error().message());
  }
  co_return out.text;
}

}  // namespace stargazer::tools
