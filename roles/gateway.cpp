// The gateway role: the HTTP server (REST API of the Redis platform, health, readiness,
// metrics), the Redis connections, the consumer groups, and one outbound consumer per
// platform adapter (started before the adapter's routes serve).

#include "common.hpp"
#include "roles.hpp"

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/outbound_consumer.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/core/service.hpp"
#include "stargazer/http/observability.hpp"
#include "stargazer/http/router.hpp"
#include "stargazer/http/server.hpp"
#include "stargazer/platform/redis_platform.hpp"
#include "stargazer/platform/redis_platform_api.hpp"
#include "stargazer/redis/subscriber.hpp"

#include <boost/asio/io_context.hpp>

namespace stargazer::roles {

int run_gateway(const config& cfg) {
  boost::asio::io_context io(1);
  metrics::registry metrics;
  health_registry health;

  const auto redis_config = redis_settings(cfg, "stargazer-gateway-" + cfg.instance_id);
  redis::connection redis(io.get_executor(), redis_config, &metrics);
  auto pubsub_config = redis_config;
  pubsub_config.metrics_name = "pubsub";
  redis::subscriber replies(io.get_executor(), pubsub_config, &metrics);
  bus::event_bus bus(redis, bus::event_bus_settings{.stream_maxlen = cfg.stream_maxlen}, &metrics);

  platform::redis_platform redis_platform(redis, bus);
  platform::reply_hub hub(replies);
  auto outbound = std::make_shared<bus::outbound_consumer>(redis, redis_config, bus.names(), cfg.instance_id,
                                                           redis_platform, bus::outbound_consumer_settings{}, &metrics);

  http::router routes;
  http::add_observability_routes(routes, health, metrics);
  platform::redis_platform_api_settings api_settings;
  if (!cfg.admin_api_key.empty()) api_settings.admin_key_sha256 = platform::sha256_hex(cfg.admin_api_key);
  platform::add_redis_platform_routes(routes, redis_platform, hub, redis, api_settings);

  http::server_settings http_settings;
  http_settings.host = cfg.http_host;
  http_settings.port = cfg.http_port;
  http_settings.max_body_bytes = cfg.http_max_body_bytes;
  auto server = std::make_shared<http::http_server>(io, http_settings, routes, metrics);

  service_host host(io, cfg.shutdown_timeout());
  host.add(std::make_shared<redis_component>(redis, health));
  host.add(std::make_shared<subscriber_component>(replies, hub));
  host.add(std::make_shared<stream_setup_component>(bus, role::gateway, std::vector<std::string>{"redis"}, health));
  host.add(outbound);
  host.add(server);
  return host.run();
}

}  // namespace stargazer::roles
