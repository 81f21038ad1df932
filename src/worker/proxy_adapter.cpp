#include "stargazer/worker/proxy_adapter.hpp"

#include "stargazer/core/error.hpp"
#include "stargazer/core/json.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/platform/history_json.hpp"

#include <fmt/format.h>
#include <rapidjson/document.h>

namespace stargazer::worker {

using platform::task;

namespace {
// Sends outside a turn's reply: the turn's trace and nonce apply, no explicit key. (A named
// object: GCC 12 mishandles braced temporaries inside co_await.)
const platform::send_context no_context;
}  // namespace

proxy_adapter::proxy_adapter(bus::event_bus& bus, bus::rpc_client& rpc, std::string platform,
                             platform::bot_identity me, const bus::turn* turn)
    : bus_(bus), rpc_(rpc), platform_(std::move(platform)), me_(std::move(me)), turn_(turn) {}

task<result<std::string>> proxy_adapter::publish(bus::outbound_envelope e, const platform::send_context& ctx) {
  e.trace_id = !ctx.trace_id.empty() ? ctx.trace_id : turn_ != nullptr ? turn_->message.trace_id : std::string();
  e.response_nonce = !ctx.response_nonce.empty() ? ctx.response_nonce
                     : turn_ != nullptr          ? turn_->message.response_nonce
                                                 : std::string();
  const bool delivers = e.type == bus::outbound_type::message || e.type == bus::outbound_type::file ||
                        e.type == bus::outbound_type::buttons;
  if (!ctx.message_key.empty()) e.message_key = ctx.message_key;
  else if (delivers && turn_ != nullptr) e.message_key = turn_->message_key(sends_++);
  e.completes_turn = ctx.completes_turn && delivers && !e.response_nonce.empty();
  // The turn's last send ends its inbound entry's run: it carries the entry's order mark.
  auto* mark = ctx.completes_turn && !ctx.state_follows && delivers && turn_ != nullptr ? turn_->order : nullptr;
  auto id = co_await bus_.publish_outbound(platform_, e, mark);
  if (!id) co_return id.error();
  if (e.completes_turn && turn_ != nullptr) turn_->completion_published = true;
  co_return e.message_key.empty() ? *id : e.message_key;
}

task<result<std::string>> proxy_adapter::send(const std::string& channel_id, const std::string& text,
                                              const platform::send_context& ctx) {
  bus::outbound_envelope e;
  e.type = bus::outbound_type::message;
  e.channel_id = channel_id;
  e.text = text;
  co_return co_await publish(std::move(e), ctx);
}

task<result<std::string>> proxy_adapter::send_file(const std::string& channel_id, const std::string& data,
                                                   const std::string& filename, const std::string& mimetype,
                                                   const platform::send_context& ctx) {
  bus::outbound_envelope e;
  e.type = bus::outbound_type::file;
  e.channel_id = channel_id;
  e.file_data = data;
  e.filename = filename;
  e.mimetype = mimetype;
  co_return co_await publish(std::move(e), ctx);
}

task<result<std::string>> proxy_adapter::send_with_buttons(const std::string& channel_id, const std::string& text,
                                                           const std::vector<bus::button>& buttons,
                                                           const platform::send_context& ctx) {
  bus::outbound_envelope e;
  e.type = bus::outbound_type::buttons;
  e.channel_id = channel_id;
  e.text = text;
  e.buttons = buttons;
  co_return co_await publish(std::move(e), ctx);
}

task<void> proxy_adapter::start_typing(const std::string& channel_id) {
  bus::outbound_envelope e;
  e.type = bus::outbound_type::start_typing;
  e.channel_id = channel_id;
  // Typing is cosmetic: a failure is logged, never fails the turn.
  if (auto r = co_await publish(std::move(e), no_context); !r)
    log::logger("proxy").warn("start_typing not published: {}", r.error().message());
}

task<void> proxy_adapter::stop_typing(const std::string& channel_id) {
  bus::outbound_envelope e;
  e.type = bus::outbound_type::stop_typing;
  e.channel_id = channel_id;
  if (auto r = co_await publish(std::move(e), no_context); !r)
    log::logger("proxy").warn("stop_typing not published: {}", r.error().message());
}

task<bool> proxy_adapter::add_reaction(const std::string& channel_id, const std::string& message_id,
                                       const std::string& emoji) {
  bus::outbound_envelope e;
  e.type = bus::outbound_type::reaction;
  e.channel_id = channel_id;
  e.message_id = message_id;
  e.emoji = emoji;
  co_return static_cast<bool>(co_await publish(std::move(e), no_context));
}

task<void> proxy_adapter::set_presence(const std::string& text, const std::string& emoji) {
  bus::outbound_envelope e;
  e.type = bus::outbound_type::presence;
  e.text = text;
  e.emoji = emoji;
  auto r = co_await publish(std::move(e), no_context);
  if (!r) throw std::system_error(r.error(), "presence for " + platform_);
}

task<void> proxy_adapter::turn_complete(const std::string& channel_id, const std::string& response_nonce) {
  bus::outbound_envelope e;
  e.type = bus::outbound_type::turn_complete;
  e.channel_id = channel_id;
  platform::send_context ctx;
  ctx.response_nonce = response_nonce;
  auto r = co_await publish(std::move(e), ctx);
  if (!r) throw std::system_error(r.error(), "turn_complete for " + channel_id);
}

task<result<bus::rpc_reply>> proxy_adapter::rpc(const std::string& method, const std::string& args_json,
                                                const std::string& channel_id) {
  const auto trace = turn_ != nullptr ? turn_->message.trace_id : std::string();
  auto r = co_await rpc_.call(platform_, method, args_json, channel_id, trace);
  if (!r) last_rpc_error_ = method + ": " + r.error().message();
  else if (!r->ok) last_rpc_error_ = method + ": " + r->error;
  co_return r;
}

task<std::vector<platform::history_message>> proxy_adapter::fetch_history(const std::string& channel_id, int limit) {
  auto r = co_await rpc("fetch_channel_history", fmt::format(R"({{"limit":{}}})", limit), channel_id);
  if (r && r->ok)
    if (auto parsed = platform::history_from_json(r->result_json)) co_return std::move(*parsed);
  log::logger("proxy").warn("fetch_channel_history for {}:{} failed: {}", platform_, channel_id,
                            r && r->ok ? "malformed result" : last_rpc_error_);
  co_return std::vector<platform::history_message>{};
}

task<bool> proxy_adapter::is_channel_valid(const std::string& channel_id) {
  auto r = co_await rpc("is_channel_valid", "{}", channel_id);
  co_return r && r->ok && r->result_json == "true";
}

task<bool> proxy_adapter::should_skip_channel_heartbeat(const std::string& channel_id) {
  auto r = co_await rpc("should_skip_channel_heartbeat", "{}", channel_id);
  co_return !(r && r->ok) || r->result_json == "true";  // unknown: skip; a missed heartbeat costs nothing
}

task<result<std::string>> proxy_adapter::execute_tool(const std::string& channel_id, const std::string& tool_name,
                                                      const std::string& args_json, const std::string& ctx_json) {
  const auto args = fmt::format(R"({{"tool_name":{},"tool_args":{},"tool_ctx":{}}})", json::quoted(tool_name),
                                args_json.empty() ? "{}" : args_json, ctx_json.empty() ? "{}" : ctx_json);
  auto r = co_await rpc("execute_tool", args, channel_id);
  if (!r) co_return r.error();
  if (!r->ok) co_return make_error_code(errc::redis_error);  // the reason is in last_rpc_error()
  rapidjson::Document text;  // the gateway answers the tool's result as a JSON string
  text.Parse(r->result_json.c_str(), r->result_json.size());
  if (text.HasParseError() || !text.IsString()) co_return r->result_json;
  co_return std::string(text.GetString(), text.GetStringLength());
}

}  // namespace stargazer::worker
