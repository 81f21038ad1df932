#pragma once
// Remote tool execution over the tools stream (docs/protocol.md §3.5-3.6).
// Worker side, `remote_tool_client`: publishes a tool_request on `sg:stream:tools` naming
// its reply stream `sg:tools:reply:{worker_id}`, and a demultiplexer reading that stream
// resolves waiters by request id; a waiter gives up at the request's deadline, and a
// second reply for the same id (a tools process died after answering and the request was
// re-run) is dropped. Tools side, `tool_service`: the consumer engine on
// (`sg:stream:tools`, `sg:tools`) runs each request with the registry and XADDs the reply.

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/stream_consumer.hpp"
#include "stargazer/core/service.hpp"
#include "stargazer/redis/connection.hpp"
#include "stargazer/tools/registry.hpp"

#include <chrono>
#include <memory>
#include <string>

namespace stargazer::tools {

class remote_tool_client final : public component {
public:
  remote_tool_client(redis::connection& commands, redis::connection_settings blocking, bus::event_bus& bus,
                     std::string worker_id, metrics::registry* metrics = nullptr);
  ~remote_tool_client() override;

  std::string_view name() const override { return "remote-tools"; }
  boost::asio::awaitable<void> start() override;
  // Fails the waiters, stops reading, deletes the reply stream.
  boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline) override;

  boost::asio::awaitable<tool_output> call(const std::string& tool_name, const std::string& args_json,
                                           const call_context& ctx, std::chrono::milliseconds deadline);
  const std::string& reply_stream() const;
  std::size_t waiting() const;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

struct tool_service_settings {
  bus::consumer_settings consumer;  // stream/group/consumer filled from the topology when empty
  std::size_t reply_maxlen = 1000;
  std::chrono::seconds reply_ttl{3600};
};

class tool_service final : public component {
public:
  tool_service(redis::connection& commands, const redis::connection_settings& blocking, bus::event_bus& bus,
               const registry& tools, const std::string& consumer_name, tool_service_settings settings = {},
               metrics::registry* metrics = nullptr);
  ~tool_service() override;

  std::string_view name() const override { return "tool-service"; }
  boost::asio::awaitable<void> start() override;
  boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline) override;
  bus::stream_consumer& engine();

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::tools
