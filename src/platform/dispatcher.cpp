#include "stargazer/platform/dispatcher.hpp"

#include "stargazer/core/json.hpp"
#include "stargazer/core/json_value.hpp"
#include "stargazer/platform/history_json.hpp"

#include <algorithm>

namespace stargazer::platform {

namespace asio = boost::asio;

outbound_dispatcher::outbound_dispatcher(platform_adapter& adapter, gateway_tool_runner tools)
    : adapter_(adapter), tools_(std::move(tools)), log_("dispatch:" + std::string(adapter.name())) {}

asio::awaitable<bus::rpc_reply> outbound_dispatcher::answer(const bus::outbound_envelope& e) {
  // Arguments a worker sent that are not an object count as none: every argument has a default.
  auto parsed = json::parse_object(e.rpc_args_json);
  rapidjson::Document args;
  if (auto* doc = std::get_if<rapidjson::Document>(&parsed)) args.Swap(*doc);
  else args.SetObject();
  const auto int_arg = [&](const char* name, int fallback) {
    return args.HasMember(name) && args[name].IsInt() ? args[name].GetInt() : fallback;
  };
  const auto str_arg = [&](const char* name) {
    return args.HasMember(name) && args[name].IsString() ? std::string(args[name].GetString(), args[name].GetStringLength())
                                                         : std::string();
  };
  const auto json_arg = [&](const char* name) {
    return args.HasMember(name) ? json::to_string(args[name]) : std::string("{}");
  };
  const auto flag = [](bool b) { return bus::rpc_reply{.ok = true, .result_json = b ? "true" : "false"}; };

  if (e.rpc_method == "fetch_channel_history") {
    auto history = co_await adapter_.fetch_history(e.channel_id, std::clamp(int_arg("limit", 10), 0, 1000));
    co_return bus::rpc_reply{.ok = true, .result_json = history_to_json(history)};
  }
  if (e.rpc_method == "should_skip_channel_heartbeat")
    co_return flag(co_await adapter_.should_skip_channel_heartbeat(e.channel_id));
  if (e.rpc_method == "is_channel_valid") co_return flag(co_await adapter_.is_channel_valid(e.channel_id));
  if (e.rpc_method == "execute_tool" && tools_) {
    auto r = co_await tools_(str_arg("tool_name"), json_arg("tool_args"), json_arg("tool_ctx"));
    if (!r) co_return bus::rpc_reply{.ok = false, .error = r.error().message()};
    co_return bus::rpc_reply{.ok = true, .result_json = json::quoted(*r)};
  }
  co_return bus::rpc_reply{.ok = false, .error = "Unknown RPC method: " + e.rpc_method};
}

asio::awaitable<result<std::string>> outbound_dispatcher::deliver(const bus::outbound_envelope& e,
                                                                 bus::order_mark* mark) {
  using bus::outbound_type;
  send_context ctx{e.trace_id, e.response_nonce, e.message_key, bus::ends_turn(e)};
  ctx.order_mark = mark;
  switch (e.type) {
    case outbound_type::message: co_return co_await adapter_.send(e.channel_id, e.text, ctx);
    case outbound_type::file:
      co_return co_await adapter_.send_file(e.channel_id, e.file_data, e.filename, e.mimetype, ctx);
    case outbound_type::buttons: co_return co_await adapter_.send_with_buttons(e.channel_id, e.text, e.buttons, ctx);
    case outbound_type::typing:
    case outbound_type::start_typing: co_await adapter_.start_typing(e.channel_id); break;
    case outbound_type::stop_typing: co_await adapter_.stop_typing(e.channel_id); break;
    case outbound_type::reaction:
      if (!co_await adapter_.add_reaction(e.channel_id, e.message_id, e.emoji))
        log_.warn("{} has no reactions; dropped", adapter_.name());
      break;
    case outbound_type::presence: co_await adapter_.set_presence(e.text, e.emoji); break;
    case outbound_type::turn_complete: co_await adapter_.turn_complete(e.channel_id, e.response_nonce); break;
    case outbound_type::rpc_request: break;  // answered by answer()
  }
  co_return std::string();
}

asio::awaitable<void> outbound_dispatcher::turn_complete(const std::string& channel_id,
                                                         const std::string& response_nonce) {
  co_await adapter_.turn_complete(channel_id, response_nonce);
}

}  // namespace stargazer::platform
