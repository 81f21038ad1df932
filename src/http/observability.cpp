#include "stargazer/http/observability.hpp"

#include "stargazer/core/metrics.hpp"
#include "stargazer/core/service.hpp"
#include "stargazer/http/router.hpp"

namespace stargazer::http {

void add_observability_routes(router& routes, const health_registry& health, const metrics::registry& metrics) {
  routes.add(method::get, "/healthz", sync_handler([](request&) { return response::json(200, R"({"status":"ok"})"); }));
  routes.add(method::get, "/readyz", sync_handler([&health](request&) {
               const auto result = health.check();
               return response::json(result.ready ? 200 : 503, health.to_json(result));
             }));
  routes.add(method::get, "/metrics", sync_handler([&metrics](request&) {
               return response::text(200, metrics.render(), "text/plain; version=0.0.4; charset=utf-8");
             }));
  routes.add(method::get, "/openapi.json", sync_handler([](request&) {
               return response::json(200, std::string(openapi_document()));
             }));
}

}  // namespace stargazer::http
