// The gateway role: the HTTP server (health, readiness, metrics; the REST API and the
// web chat arrive with their issues).

#include "roles.hpp"

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
  http::router routes;
  http::add_observability_routes(routes, health, metrics);

  http::server_settings http_settings;
  http_settings.host = cfg.http_host;
  http_settings.port = cfg.http_port;
  http_settings.max_body_bytes = cfg.http_max_body_bytes;
  auto server = std::make_shared<http::http_server>(io, http_settings, routes, metrics);
  health.add("http", [] { return readiness{true, "listening"}; });

  service_host host(io, cfg.shutdown_timeout());
  host.add(server);
  return host.run();
}

}  // namespace stargazer::roles
