#pragma once
// Wiring shared by the role files: Redis settings from the configuration, and small
// components that tie the Redis connection and the bus to the service lifecycle.

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/core/config.hpp"
#include "stargazer/core/service.hpp"
#include "stargazer/core/spawn.hpp"
#include "stargazer/http/server.hpp"
#include "stargazer/platform/redis/redis_platform_api.hpp"
#include "stargazer/redis/connection.hpp"
#include "stargazer/redis/subscriber.hpp"
#include "stargazer/tools/registry.hpp"

#include "stargazer/core/metrics.hpp"

#include <boost/asio/io_context.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace stargazer::roles {

redis::connection_settings redis_settings(const config& cfg, const std::string& client_name);
// For an operator command's short-lived connection (client "stargazer-{command}"): quick
// timeouts, several reconnects within them, no health checks.
redis::connection_settings command_redis_settings(const config& cfg, const std::string& command,
                                                  std::chrono::milliseconds timeout);

// Runs an operator command that reads Redis and prints its answer (`stargazer tools list`,
// `usage`): logs only warnings (stdout is the answer), one short-lived connection, `body`
// on a single-threaded io_context. The exit status: 0 when `body` finished, 1 with its
// error on stderr, 2 for an unusable --redis-url.
int run_redis_command(const config& cfg, const std::string& command, std::chrono::milliseconds timeout,
                      std::function<boost::asio::awaitable<void>(redis::connection&)> body);

// The HTTP server's settings from the --http-* options, listening on `port`.
http::server_settings http_settings(const config& cfg, std::uint16_t port);

// The tool registry with the built-in tools, limits and permissions from the configuration.
std::unique_ptr<tools::registry> make_tool_registry(const config& cfg, redis::connection& redis);

// The platforms a gateway serves: each has an outbound stream and consumer group.
std::vector<std::string> gateway_platforms();

// What every process has: one io thread, metrics, health, the main Redis connection and
// the bus. The role functions add their components to `host`.
struct process {
  process(const config& c, const std::string& client_name)
      : cfg(c),
        redis_config(redis_settings(c, client_name)),
        redis(io.get_executor(), redis_config, &metrics),
        bus(redis, bus::event_bus_settings{.stream_maxlen = c.stream_maxlen}, &metrics),
        host(io, c.shutdown_timeout()) {}

  const config& cfg;
  boost::asio::io_context io{1};
  metrics::registry metrics;
  metrics::callback_handle coroutine_failures_metric = expose_coroutine_failures(metrics);
  health_registry health;
  redis::connection_settings redis_config;
  redis::connection redis;
  bus::event_bus bus;
  service_host host;
};

// The MCP servers' tools (--mcp-servers) in `r`: where the registry runs tools (the tools
// role, a worker or standalone with in-process tools) the servers start here; where it
// only offers them (a worker with --tools-mode=remote) their catalog is read from Redis.
void add_mcp_tools(process& p, tools::registry& r, bool runs_tools);

// Add the gateway's or the worker's components to p.host; the returned object owns them
// and must live until p.host.run() returns.
// Worker and tools roles: /healthz, /readyz and /metrics on --health-port, when set.
std::shared_ptr<void> add_health_server(process& p);

struct gateway_handle {
  std::shared_ptr<void> parts;
  std::function<std::uint16_t()> http_port;  // the bound port, once the server started
};
gateway_handle add_gateway(process& p);
std::shared_ptr<void> add_worker(process& p);

// (redis_settings above: the configured Redis (URL, Sentinel, TLS); redis://127.0.0.1:6379
// when no URL is set.)

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

// Starts a platform adapter with the process, after the Pub/Sub connection it listens
// on; stops it before that connection. Reports to /readyz as the adapter's name
// (ready while the subscription is confirmed on a live connection).
class adapter_component final : public component {
public:
  adapter_component(platform::platform_adapter& adapter, redis::subscriber& sub, health_registry& health);
  std::string_view name() const override { return name_; }
  boost::asio::awaitable<void> start() override;
  boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline) override;

private:
  platform::platform_adapter& adapter_;
  redis::subscriber& sub_;
  std::string name_;
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
