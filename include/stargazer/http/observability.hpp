#pragma once
// /healthz (the process is alive), /readyz (every component is ready), /metrics
// (Prometheus text format) and /openapi.json (the API description).

#include <string_view>

namespace stargazer {
class health_registry;
namespace metrics {
class registry;
}
}  // namespace stargazer

namespace stargazer::http {

class router;

void add_observability_routes(router& routes, const health_registry& health, const metrics::registry& metrics);

// docs/openapi.json, embedded at build time (src/CMakeLists.txt, cmake/embed_text.cmake).
std::string_view openapi_document();

}  // namespace stargazer::http
