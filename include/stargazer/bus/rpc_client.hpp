#pragma once
// Worker-side RPC to the gateway (docs/protocol.md §3.4): an rpc_request
// envelope on the platform's outbound stream, the reply taken by BLPOP from
// sg:rpc:reply:{request_id} with a deadline. Each call in flight uses its own pooled
// blocking connection, so calls do not queue behind each other.

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/rpc_reply.hpp"
#include "stargazer/redis/connection.hpp"

#include <chrono>
#include <memory>
#include <string>

namespace stargazer::bus {

class rpc_client {
public:
  rpc_client(event_bus& bus, redis::connection_settings blocking,
             std::chrono::milliseconds default_timeout = std::chrono::seconds(10), std::size_t max_idle = 8);
  ~rpc_client();

  // Transport failure or errc::timeout as the error; the gateway's answer otherwise.
  boost::asio::awaitable<result<rpc_reply>> call(const std::string& platform, const std::string& method,
                                                 const std::string& args_json, const std::string& channel_id,
                                                 const std::string& trace_id,
                                                 std::optional<std::chrono::milliseconds> timeout = std::nullopt);

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::bus
