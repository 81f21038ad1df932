#include "common.hpp"

#include "stargazer/core/spawn.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/http/observability.hpp"
#include "stargazer/http/router.hpp"
#include "stargazer/http/server.hpp"
#include "stargazer/tools/builtin.hpp"
#include "stargazer/tools/mcp/servers.hpp"
#include "stargazer/worker/cache_history.hpp"

#include <boost/asio.hpp>

#include <iostream>

namespace stargazer::roles {

namespace asio = boost::asio;

redis::connection_settings redis_settings(const config& cfg, const std::string& client_name) {
  auto s = redis::settings_from_url(cfg.redis_url.empty() ? "redis://127.0.0.1:6379" : cfg.redis_url);
  s.sentinel.addresses = cfg.redis_sentinels;
  s.sentinel.master_name = cfg.redis_sentinel_master;
  s.tls_ca_file = cfg.redis_tls_ca_file;
  s.tls_verify = cfg.redis_tls_verify;
  s.client_name = client_name;
  return s;
}

redis::connection_settings command_redis_settings(const config& cfg, const std::string& command,
                                                  std::chrono::milliseconds timeout) {
  auto s = redis_settings(cfg, "stargazer-" + command);
  s.connect_timeout = timeout;
  s.command_timeout = timeout;
  s.health_check_interval = std::chrono::milliseconds(0);
  s.reconnect_max = std::chrono::milliseconds(500);  // several attempts fit in the timeout
  s.metrics_name = command;
  return s;
}

int run_redis_command(const config& cfg, const std::string& command, std::chrono::milliseconds timeout,
                      std::function<boost::asio::awaitable<void>(redis::connection&)> body) {
  auto level = *log::parse_level(cfg.log_level);
  if (level == log::level::info) level = log::level::warn;  // stdout is the answer
  log::configure(level, *log::parse_format(cfg.log_format));
  redis::connection_settings settings;
  try {
    settings = command_redis_settings(cfg, command, timeout);
  } catch (const std::exception& e) {
    std::cerr << "stargazer: error: --redis-url: " << e.what() << "\n";
    return 2;
  }
  boost::asio::io_context io(1);
  redis::connection conn(io.get_executor(), settings);
  conn.start();
  int status = 1;
  boost::asio::co_spawn(io, body(conn), [&](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        std::cerr << "stargazer: error: " << ex.what() << "\n";
      }
    } else {
      status = 0;
    }
    conn.stop();
  });
  io.run();
  std::cout.flush();
  return status;
}

std::unique_ptr<tools::registry> make_tool_registry(const config& cfg, redis::connection& redis) {
  tools::registry_settings s;
  s.default_deadline = std::chrono::milliseconds(static_cast<std::int64_t>(cfg.tool_timeout_seconds * 1000));
  s.permissions = std::get<0>(tools::parse_permissions(cfg.tool_permissions));  // validated with the config
  auto r = std::make_unique<tools::registry>(std::move(s));
  tools::add_builtin_tools(*r, redis, worker::history_from_cache(redis));
  return r;
}

void add_mcp_tools(process& p, tools::registry& r, bool runs_tools) {
  if (!runs_tools) {
    p.host.add(std::make_shared<tools::mcp::catalog_reader>(p.redis, r));
    return;
  }
  auto servers = std::get<0>(tools::mcp::parse_server_configs(p.cfg.mcp_servers));  // validated with the config
  if (servers.empty()) return;
  tools::mcp::pool_settings settings;
  settings.node_id = p.cfg.node_id;
  settings.client_version = STARGAZER_VERSION;
  p.host.add(std::make_shared<tools::mcp::server_pool>(p.io.get_executor(), std::move(servers), r, settings, &p.redis,
                                                       &p.metrics, &p.health));
}

http::server_settings http_settings(const config& cfg, std::uint16_t port) {
  http::server_settings s;
  s.host = cfg.http_host;
  s.port = port;
  s.max_body_bytes = cfg.http_max_body_bytes;
  s.header_timeout =
      std::chrono::milliseconds(static_cast<std::int64_t>(cfg.http_header_timeout_seconds * 1000));
  s.max_connections_per_ip = cfg.http_max_connections_per_ip;
  s.proxies = *http::trusted_proxies::parse(cfg.http_trusted_proxies);  // validated with the config
  return s;
}

std::shared_ptr<void> add_health_server(process& p) {
  if (p.cfg.health_port == 0) return nullptr;
  struct parts {
    http::router routes;
    std::shared_ptr<http::http_server> server;
  };
  auto s = std::make_shared<parts>();
  http::add_observability_routes(s->routes, p.health, p.metrics);
  s->server = std::make_shared<http::http_server>(p.io, http_settings(p.cfg, p.cfg.health_port), s->routes,
                                                  p.metrics);
  p.host.add(s->server);
  return s;
}

// Every platform's stream and group exist whether or not a gateway serves it yet, so a
// worker can publish to any (Discord's entries wait for a gateway with a token).
std::vector<std::string> gateway_platforms() { return {"redis", "webchat", "discord", "matrix"}; }

redis_component::redis_component(redis::connection& conn, health_registry& health) : conn_(conn) {
  health.add("redis", [&conn] {
    const auto s = conn.stats();
    return readiness{s.connected, s.connected ? "connected to " + s.endpoint : s.last_error.empty() ? "connecting" : s.last_error};
  });
}

asio::awaitable<void> redis_component::start() {
  conn_.start();
  co_return;
}

asio::awaitable<void> redis_component::stop(std::chrono::milliseconds) {
  conn_.stop();
  co_return;
}

asio::awaitable<void> subscriber_component::start() {
  sub_.start();
  // The pattern is recorded at once and (re)subscribed on every connect, so startup
  // does not wait for Redis.
  const auto executor = co_await asio::this_coro::executor;  // not in the call: see webchat_platform::start
  spawn(executor, [&hub = hub_]() -> asio::awaitable<void> {
    if (const auto ec = co_await hub.start()) log::logger("replies").debug("subscription not confirmed yet: {}", ec.message());
  }, "replies");
}

asio::awaitable<void> subscriber_component::stop(std::chrono::milliseconds) {
  sub_.stop();
  co_return;
}

adapter_component::adapter_component(platform::platform_adapter& adapter, redis::subscriber& sub,
                                     health_registry& health)
    : adapter_(adapter), sub_(sub), name_("platform:" + std::string(adapter.name())) {
  health.add(std::string(adapter.name()), [&sub] {
    const bool ready = sub.confirmed() > 0 && sub.link().stats().connected;
    return readiness{ready, ready ? "subscribed" : "subscribing"};
  });
}

asio::awaitable<void> adapter_component::start() {
  sub_.start();
  co_await adapter_.start();
}

asio::awaitable<void> adapter_component::stop(std::chrono::milliseconds) {
  co_await adapter_.stop();
  sub_.stop();
}

struct stream_setup_component::state {
  bus::event_bus& bus;
  role r;
  std::vector<std::string> platforms;
  bool done = false;
  bool stopped = false;
  std::string last_error = "not yet created";
};

stream_setup_component::stream_setup_component(bus::event_bus& bus, role r, std::vector<std::string> platforms,
                                               health_registry& health)
    : state_(std::make_shared<state>(state{bus, r, std::move(platforms)})) {
  health.add("streams", [s = state_] { return readiness{s->done, s->done ? "consumer groups ready" : s->last_error}; });
}

asio::awaitable<void> stream_setup_component::start() {
  auto ex = co_await asio::this_coro::executor;
  spawn(ex, [s = state_]() -> asio::awaitable<void> {
    asio::steady_timer t(co_await asio::this_coro::executor);
    while (!s->stopped && !s->done) {
      try {
        co_await s->bus.ensure_streams(s->r, s->platforms);
        s->done = true;
        continue;
      } catch (const std::exception& e) {
        s->last_error = e.what();
        log::logger("streams").warn("creating consumer groups failed (retrying): {}", e.what());
      }
      t.expires_after(std::chrono::seconds(1));
      boost::system::error_code ec;
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }, "streams");
  co_return;
}

asio::awaitable<void> stream_setup_component::stop(std::chrono::milliseconds) {
  state_->stopped = true;
  co_return;
}

}  // namespace stargazer::roles
