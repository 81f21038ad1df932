#pragma once
// The worker's platform adapter: it holds no platform
// connection. Sends, typing, reactions and presence become outbound envelopes on
// `sg:stream:outbound:{platform}` for the gateway to deliver; history, channel checks and
// gateway-pinned tools are RPCs answered by the gateway (docs/protocol.md §3.3-3.4).
// Bound to one turn, it gives each send the turn's next deterministic message key, so a
// replayed turn does not deliver twice.

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/inbound_consumer.hpp"
#include "stargazer/bus/rpc_client.hpp"
#include "stargazer/platform/platform_adapter.hpp"

#include <string>

namespace stargazer::worker {

class proxy_adapter final : public platform::platform_adapter {
public:
  // `turn` (may be null: presence and other sends outside a turn) must outlive the adapter.
  proxy_adapter(bus::event_bus& bus, bus::rpc_client& rpc, std::string platform, platform::bot_identity me,
                const bus::turn* turn = nullptr);

  std::string_view name() const override { return platform_; }
  platform::task<void> start() override { co_return; }
  platform::task<void> stop() override { co_return; }
  bool is_running() const override { return true; }
  platform::bot_identity identity() const override { return me_; }

  // Each returns the message key of the send (the platform's id is known only to the gateway).
  platform::task<result<std::string>> send(const std::string& channel_id, const std::string& text,
                                           const platform::send_context& ctx) override;
  platform::task<result<std::string>> send_file(const std::string& channel_id, const std::string& data,
                                                const std::string& filename, const std::string& mimetype,
                                                const platform::send_context& ctx) override;
  platform::task<result<std::string>> send_with_buttons(const std::string& channel_id, const std::string& text,
                                                        const std::vector<bus::button>& buttons,
                                                        const platform::send_context& ctx) override;
  platform::task<void> start_typing(const std::string& channel_id) override;
  platform::task<void> stop_typing(const std::string& channel_id) override;
  platform::task<bool> add_reaction(const std::string& channel_id, const std::string& message_id,
                                    const std::string& emoji) override;
  platform::task<void> set_presence(const std::string& text, const std::string& emoji) override;
  // Empty when the RPC fails (logged): a missing history must not fail the turn.
  platform::task<std::vector<platform::history_message>> fetch_history(const std::string& channel_id,
                                                                       int limit) override;
  platform::task<bool> is_channel_valid(const std::string& channel_id) override;
  platform::task<bool> should_skip_channel_heartbeat(const std::string& channel_id) override;
  platform::task<void> turn_complete(const std::string& channel_id, const std::string& response_nonce) override;

  // Runs a tool that needs the live platform connection on the gateway (execute_tool RPC);
  // the tool's result text, or an error naming why.
  platform::task<result<std::string>> execute_tool(const std::string& channel_id, const std::string& tool_name,
                                                   const std::string& args_json, const std::string& ctx_json) override;
  // The error text of the last failed RPC (for tool results and logs).
  const std::string& last_rpc_error() const { return last_rpc_error_; }

private:
  // Publishes `e` with the turn's trace id, nonce and next message key filled in when empty.
  platform::task<result<std::string>> publish(bus::outbound_envelope e, const platform::send_context& ctx);
  platform::task<result<bus::rpc_reply>> rpc(const std::string& method, const std::string& args_json,
                                             const std::string& channel_id);

  bus::event_bus& bus_;
  bus::rpc_client& rpc_;
  std::string platform_;
  platform::bot_identity me_;
  const bus::turn* turn_;
  std::size_t sends_ = 0;
  std::string last_rpc_error_;
};

}  // namespace stargazer::worker
