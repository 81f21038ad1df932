// The gateway role: the HTTP server (health, readiness, metrics), the Redis connection
// and the consumer groups. Platform adapters, their outbound consumers and the REST API
// arrive with their issues.

#include "common.hpp"
#include "roles.hpp"

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/core/service.hpp"
#include "stargazer/http/observability.hpp"
#include "stargazer/http/router.hpp"
#include "stargazer/http/server.hpp"

#include <boost/asio/io_context.hpp>

namespace stargazer::roles {

int run_gateway(const config& cfg) {
  boost::asio::io_context io(1);
  metrics::registry metrics;
  health_registry health;

  redis::connection redis(io.get_executor(), redis_settings(cfg, "stargazer-gateway-" + cfg.instance_id), &metrics);
  bus::event_bus bus(redis, bus::event_bus_settings{.stream_maxlen = cfg.stream_maxlen}, &metrics);

  http::router routes;
  http::add_observability_routes(routes, health, metrics);
  http::server_settings http_settings;
  http_settings.host = cfg.http_host;
  http_settings.port = cfg.http_port;
  http_settings.max_body_bytes = cfg.http_max_body_bytes;
  auto server = std::make_shared<http::http_server>(io, http_settings, routes, metrics);

  service_host host(io, cfg.shutdown_timeout());
  host.add(std::make_shared<redis_component>(redis, health));
  host.add(std::make_shared<stream_setup_component>(bus, role::gateway, std::vector<std::string>{}, health));
  host.add(server);
  return host.run();
}

}  // namespace stargazer::roles
