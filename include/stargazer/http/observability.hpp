#pragma once
// /healthz (the process is alive), /readyz (every component is ready) and /metrics
// (Prometheus text format).

namespace stargazer {
class health_registry;
namespace metrics {
class registry;
}
}  // namespace stargazer

namespace stargazer::http {

class router;

void add_observability_routes(router& routes, const health_registry& health, const metrics::registry& metrics);

}  // namespace stargazer::http
