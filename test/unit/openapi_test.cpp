// docs/openapi.json as embedded in the binary: valid JSON, OpenAPI 3.0.3, and in step
// with the routes the gateway registers (every route documented, nothing undocumented).

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/core/service.hpp"
#include "stargazer/core/strings.hpp"
#include "stargazer/http/observability.hpp"
#include "stargazer/http/router.hpp"
#include "stargazer/http/server.hpp"
#include "stargazer/platform/redis/redis_platform.hpp"
#include "stargazer/platform/redis/redis_platform_api.hpp"
#include "stargazer/platform/webchat/webchat_platform.hpp"
#include "stargazer/redis/connection.hpp"
#include "stargazer/redis/subscriber.hpp"

#include "run_coro.hpp"

#include <catch2/catch.hpp>
#include <rapidjson/document.h>

#include <set>
#include <utility>

using namespace stargazer;

namespace {

rapidjson::Document parsed_document() {
  const auto text = http::openapi_document();
  rapidjson::Document d;
  d.Parse(text.data(), text.size());
  INFO("offset " << d.GetErrorOffset());
  REQUIRE_FALSE(d.HasParseError());
  REQUIRE(d.IsObject());
  return d;
}

// The gateway's routes: observability, the Redis platform API and the web chat's JSON
// routes (not its page, assets and file downloads, which are for browsers), on objects that
// are constructed but never started (nothing connects).
std::set<std::pair<std::string, std::string>> registered_routes() {
  boost::asio::io_context io;
  metrics::registry metrics;
  health_registry health;
  redis::connection conn(io.get_executor(), redis::connection_settings{});
  redis::subscriber sub(io.get_executor(), redis::connection_settings{});
  bus::event_bus bus(conn, bus::event_bus_settings{});
  platform::redis_platform redis_platform(conn, bus);
  platform::reply_hub hub(sub);

  http::router routes;
  http::add_observability_routes(routes, health, metrics);
  platform::add_redis_platform_routes(routes, redis_platform, hub, platform::redis_platform_api_settings{});
  redis::subscriber rooms(io.get_executor(), redis::connection_settings{});
  platform::webchat_platform webchat(conn, bus, rooms);
  http::http_server server(io, http::server_settings{}, routes, metrics);
  webchat.add_routes(routes, server);

  static const std::set<std::string> browser_only{"/", "/webchat/signin", "/webchat/{asset}",
                                                  "/webchat/files/{file_id}/{filename}"};
  std::set<std::pair<std::string, std::string>> out;
  for (const auto& [verb, pattern] : routes.routes())
    if (!browser_only.contains(pattern)) out.emplace(pattern, ascii_lower(http::to_string(verb)));
  return out;
}

}  // namespace

TEST_CASE("the embedded OpenAPI document is valid JSON for OpenAPI 3.0.3", "[openapi]") {
  const auto d = parsed_document();
  REQUIRE(d.HasMember("openapi"));
  REQUIRE(d["openapi"].IsString());
  CHECK(std::string(d["openapi"].GetString()) == "3.0.3");
  REQUIRE(d.HasMember("info"));
  REQUIRE(d.HasMember("paths"));
  REQUIRE(d["paths"].IsObject());
  REQUIRE(d.HasMember("components"));
  CHECK(d["components"]["securitySchemes"].IsObject());
  CHECK(d["components"]["schemas"].HasMember("Error"));
}

TEST_CASE("every registered route is in the OpenAPI document and every documented one is registered", "[openapi]") {
  const auto d = parsed_document();
  const auto& paths = d["paths"];
  const auto routes = registered_routes();
  REQUIRE(routes.size() >= 17);  // 13 Redis platform routes + 4 observability routes

  for (const auto& [pattern, verb] : routes) {
    INFO(verb << " " << pattern);
    REQUIRE(paths.HasMember(pattern.c_str()));
    CHECK(paths[pattern.c_str()].HasMember(verb.c_str()));
  }

  static const std::set<std::string> operations{"get", "put", "post", "delete", "options", "head", "patch", "trace"};
  for (const auto& path : paths.GetObject()) {
    for (const auto& member : path.value.GetObject()) {
      const std::string name = member.name.GetString();
      if (!operations.contains(name)) continue;  // "parameters", "summary", ...
      INFO(name << " " << path.name.GetString());
      CHECK(routes.contains({path.name.GetString(), name}));
    }
  }
}

TEST_CASE("GET /openapi.json serves the embedded document as JSON", "[openapi]") {
  http::router routes;
  health_registry health;
  metrics::registry metrics;
  http::add_observability_routes(routes, health, metrics);
  http::request req;
  req.verb = http::method::get;
  req.target = req.path = "/openapi.json";
  boost::asio::io_context io;
  const auto res = test::run_coro(io, routes.dispatch(req));
  CHECK(res.status == 200);
  CHECK(res.content_type == "application/json");
  CHECK(res.body == http::openapi_document());
}
