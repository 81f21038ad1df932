#pragma once
// The gateway's outbound consumer for one platform (seed 002): answers RPC requests
// from workers, then per channel in order: completion-marker check and SET NX EX claim
// (idempotent delivery), dispatch by envelope type to the platform adapter, message-id
// re-sync. Malformed envelopes are dead-lettered with their reason.

#include "stargazer/bus/channel_sequencer.hpp"
#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/stream_consumer.hpp"
#include "stargazer/platform/platform_adapter.hpp"

#include <functional>
#include <memory>

namespace stargazer::bus {

struct outbound_consumer_settings {
  consumer_settings consumer;  // stream/group filled from the platform when empty
  sequencer_settings order;    // stream/lock prefix filled likewise
  std::chrono::seconds claim_ttl{300};      // seed: SET NX EX 300
  std::chrono::seconds rpc_reply_ttl{60};   // seed: EXPIRE 60
  std::chrono::seconds message_key_ttl{7776000};  // seed: 90 days on a new key
};

// Runs a tool pinned to the gateway (the execute_tool RPC); returns the result text or an error.
using gateway_tool_runner =
    std::function<boost::asio::awaitable<result<std::string>>(const std::string& name, const std::string& args_json,
                                                              const std::string& ctx_json)>;

class outbound_consumer final : public component {
public:
  outbound_consumer(redis::connection& commands, const redis::connection_settings& blocking, const topology& names,
                    const std::string& consumer_name, platform::platform_adapter& adapter,
                    outbound_consumer_settings settings = {}, metrics::registry* metrics = nullptr,
                    gateway_tool_runner tools = {});
  ~outbound_consumer() override;

  std::string_view name() const override;
  boost::asio::awaitable<void> start() override;
  boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline) override;
  stream_consumer& engine();

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

// Claim and marker keys (docs/protocol.md §4.5).
inline std::string claim_key(std::string_view message_key) { return "sg:outbound:claim:" + std::string(message_key); }

}  // namespace stargazer::bus
