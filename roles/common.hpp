#pragma once
// Wiring shared by the role files: Redis settings from the configuration, and small
// components that tie the Redis connection and the bus to the service lifecycle.

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/core/config.hpp"
#include "stargazer/core/service.hpp"
#include "stargazer/platform/redis_platform_api.hpp"
#include "stargazer/redis/connection.hpp"
#include "stargazer/redis/subscriber.hpp"

#include <memory>
#include <string>
#include <vector>

namespace stargazer::roles {

// The configured Redis (URL, Sentinel, TLS); redis://127.0.0.1:6379 when no URL is set.
redis::connection_settings redis_settings(const config& cfg, const std::string& client_name);

// Starts the connection with the process and reports it to /readyz as "redis".
class redis_component final : public component {
public:
  redis_component(redis::connection& conn, health_registry& health);
  std::string_view name() const override { return "redis"; }
  boost::asio::awaitable<void> start() override;
  boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline) override;

private:
  redis::connection& conn_;
};

// Starts the gateway's Pub/Sub connection and the reply hub's pattern subscription.
class subscriber_component final : public component {
public:
  subscriber_component(redis::subscriber& sub, platform::reply_hub& hub) : sub_(sub), hub_(hub) {}
  std::string_view name() const override { return "pubsub"; }
  boost::asio::awaitable<void> start() override;
  boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline) override;

private:
  redis::subscriber& sub_;
  platform::reply_hub& hub_;
};

// Creates the role's consumer groups, retrying in the background until Redis answers;
// reports "streams" to /readyz.
class stream_setup_component final : public component {
public:
  stream_setup_component(bus::event_bus& bus, role r, std::vector<std::string> platforms, health_registry& health);
  std::string_view name() const override { return "streams"; }
  boost::asio::awaitable<void> start() override;
  boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline) override;

private:
  struct state;
  std::shared_ptr<state> state_;
};

}  // namespace stargazer::roles
