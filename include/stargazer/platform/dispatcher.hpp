#pragma once
// What an outbound envelope means for a platform: the gateway's outbound consumer
// (bus/outbound_consumer.hpp) decodes, orders and deduplicates; this dispatcher turns each
// envelope into the adapter's call (send, file, buttons, typing, reaction, presence) and
// answers the workers' RPCs (fetch_channel_history, should_skip_channel_heartbeat,
// is_channel_valid, execute_tool) from the adapter.

#include "stargazer/bus/outbound_consumer.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/platform/platform_adapter.hpp"

#include <functional>

namespace stargazer::platform {

// Runs a tool pinned to the gateway (the execute_tool RPC); returns the result text or an error.
using gateway_tool_runner =
    std::function<boost::asio::awaitable<result<std::string>>(const std::string& name, const std::string& args_json,
                                                              const std::string& ctx_json)>;

class outbound_dispatcher final : public bus::outbound_handler {
public:
  // Without `tools`, execute_tool is answered as an unknown method.
  explicit outbound_dispatcher(platform_adapter& adapter, gateway_tool_runner tools = {});

  std::string_view platform() const override { return adapter_.name(); }
  boost::asio::awaitable<bus::rpc_reply> answer(const bus::outbound_envelope& request) override;
  boost::asio::awaitable<result<std::string>> deliver(const bus::outbound_envelope& e, bus::order_mark* mark) override;
  boost::asio::awaitable<void> turn_complete(const std::string& channel_id, const std::string& response_nonce) override;
  bool writes_delivery_marker() const override { return adapter_.writes_delivery_marker(); }
  bool delivers_atomically() const override { return adapter_.delivers_atomically(); }

private:
  platform_adapter& adapter_;
  gateway_tool_runner tools_;
  log::logger log_;
};

}  // namespace stargazer::platform
