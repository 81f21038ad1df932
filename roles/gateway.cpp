// The gateway role: the HTTP server (REST API of the Redis platform, the web chat page and
// WebSocket, health, readiness, metrics), the Pub/Sub connections (replies, web chat
// rooms), the consumer groups, and the outbound consumer of each platform adapter
// (started before its adapter and the HTTP server).

#include "common.hpp"
#include "roles.hpp"

#include "stargazer/bus/outbound_consumer.hpp"
#include "stargazer/http/observability.hpp"
#include "stargazer/http/router.hpp"
#include "stargazer/http/server.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/platform/discord/discord_platform.hpp"
#include "stargazer/platform/matrix/matrix_platform.hpp"
#include "stargazer/platform/dispatcher.hpp"
#include "stargazer/platform/redis/redis_platform.hpp"
#include "stargazer/platform/redis/redis_platform_api.hpp"
#include "settings.hpp"
#include "stargazer/platform/webchat/webchat_platform.hpp"
#include "stargazer/redis/subscriber.hpp"

#include <rapidjson/document.h>

namespace stargazer::roles {

namespace {

struct gateway_parts {
  explicit gateway_parts(process& p)
      : replies(p.io.get_executor(), pubsub_settings(p, "pubsub"), &p.metrics),
        redis_platform(p.redis, p.bus),
        quotas(p.redis, &p.metrics),
        hub(replies),
        tool_registry(make_tool_registry(p.cfg, p.redis)),
        redis_dispatch(redis_platform, pinned_tools(redis_platform)),
        outbound(std::make_shared<bus::outbound_consumer>(p.redis, p.redis_config, p.bus.names(), p.cfg.node_id,
                                                          redis_dispatch, bus::outbound_consumer_settings{},
                                                          &p.metrics)),
        rooms(p.io.get_executor(), pubsub_settings(p, "webchat-pubsub"), &p.metrics),
        webchat(p.redis, p.bus, rooms, webchat_settings_from(p.cfg)),
        webchat_dispatch(webchat, pinned_tools(webchat)),
        webchat_outbound(std::make_shared<bus::outbound_consumer>(p.redis, p.redis_config, p.bus.names(),
                                                                  p.cfg.node_id, webchat_dispatch,
                                                                  bus::outbound_consumer_settings{}, &p.metrics)) {
    http::add_observability_routes(routes, p.health, p.metrics);
    // The REST API's messages are held to the quotas here, where a 429 can answer them.
    redis_platform.set_quotas(&quotas, platform::quota_settings_from(p.cfg));
    platform::redis_platform_api_settings api;
    if (!p.cfg.admin_api_key.empty()) api.admin_key_sha256 = platform::sha256_hex(p.cfg.admin_api_key);
    platform::add_redis_platform_routes(routes, redis_platform, hub, api);
    server =
        std::make_shared<http::http_server>(p.io, http_settings(p.cfg, p.cfg.http_port), routes, p.metrics);
    if (p.cfg.webchat_enabled) {
      webchat.add_routes(routes, *server);
      const auto auth = p.cfg.effective_webchat_auth();
      log::logger("gateway").info("web chat sign-in: {}{}", auth,
                                  auth == "invite" ? " (invite people with `stargazer webchat invite --name NAME`)"
                                                   : " (anyone who reaches the page; loopback only)");
      if (auth == "invite" && p.cfg.admin_api_key.empty())
        log::logger("gateway").warn("web chat sign-in is invite, but no admin key is set: nobody can create invites");
    }
    if (!p.cfg.discord_token.empty()) discord = std::make_unique<discord_parts>(p, pinned_tools_factory());
    else log::logger("gateway").info("Discord is off: no --discord-token (SG_DISCORD_TOKEN)");
    if (!p.cfg.matrix_homeserver.empty()) matrix = std::make_unique<matrix_parts>(p, pinned_tools_factory());
    else log::logger("gateway").info("Matrix is off: no --matrix-homeserver (SG_MATRIX_HOMESERVER)");
  }

  static platform::webchat_settings webchat_settings_from(const config& cfg) {
    platform::webchat_settings s;
    s.bot_name = cfg.bot_name;
    s.allowed_origins = cfg.webchat_allowed_origins;
    s.auth = cfg.effective_webchat_auth() == "invite" ? platform::webchat_auth_mode::invite
                                                      : platform::webchat_auth_mode::none;
    if (!cfg.admin_api_key.empty()) s.admin_key_sha256 = platform::sha256_hex(cfg.admin_api_key);
    s.public_url = cfg.public_url;
    s.session_ttl = std::chrono::seconds(static_cast<std::int64_t>(cfg.webchat_session_ttl_seconds));
    return s;
  }

  // The Matrix platform, when a homeserver is configured (credentials checked with the config).
  struct matrix_parts {
    matrix_parts(process& p, const std::function<platform::gateway_tool_runner(platform::platform_adapter&)>& tools)
        : adapter(p.redis, p.bus, settings_from(p.cfg), &p.metrics),
          dispatch(adapter, tools(adapter)),
          outbound(std::make_shared<bus::outbound_consumer>(p.redis, p.redis_config, p.bus.names(), p.cfg.node_id,
                                                            dispatch, bus::outbound_consumer_settings{}, &p.metrics)) {
      p.health.add("matrix", [this] { return adapter.health(); });
    }
    static platform::matrix::matrix_settings settings_from(const config& cfg) {
      platform::matrix::matrix_settings s;
      s.homeserver = cfg.matrix_homeserver;
      s.user_id = cfg.matrix_user_id;
      s.access_token = cfg.matrix_access_token;
      s.password = cfg.matrix_password;
      s.join_policy = *platform::matrix::parse_auto_join(cfg.matrix_auto_join);  // validated with the config
      s.allowed_users = cfg.matrix_allowed_users;
      s.bot_name = cfg.bot_name;
      s.node_id = cfg.node_id;
      return s;
    }
    platform::matrix::matrix_platform adapter;
    platform::outbound_dispatcher dispatch;
    std::shared_ptr<bus::outbound_consumer> outbound;
  };

  // The Discord platform, when a token is configured.
  struct discord_parts {
    discord_parts(process& p, const std::function<platform::gateway_tool_runner(platform::platform_adapter&)>& tools)
        : adapter(p.redis, p.bus, settings_from(p.cfg), &p.metrics),
          dispatch(adapter, tools(adapter)),
          outbound(std::make_shared<bus::outbound_consumer>(p.redis, p.redis_config, p.bus.names(), p.cfg.node_id,
                                                            dispatch, bus::outbound_consumer_settings{}, &p.metrics)) {
      p.health.add("discord", [this] { return adapter.health(); });
    }
    static platform::discord::discord_settings settings_from(const config& cfg) {
      platform::discord::discord_settings s;
      s.token = cfg.discord_token;
      s.intents = platform::discord::parse_intents(cfg.discord_intents).value_or(platform::discord::default_intents);
      s.shards = cfg.discord_shards == "auto" ? 0 : std::stoi(cfg.discord_shards);  // validated with the config
      s.api_url = cfg.discord_api_url;
      s.gateway_url = cfg.discord_gateway_url;
      s.allow_bots = cfg.discord_allow_bots;
      s.bot_name = cfg.bot_name;
      s.node_id = cfg.node_id;
      return s;
    }
    platform::discord::discord_platform adapter;
    platform::outbound_dispatcher dispatch;
    std::shared_ptr<bus::outbound_consumer> outbound;
  };

  std::function<platform::gateway_tool_runner(platform::platform_adapter&)> pinned_tools_factory() {
    return [this](platform::platform_adapter& a) { return pinned_tools(a); };
  }

  // Gateway-pinned tools run here with the live adapter (the execute_tool RPC).
  platform::gateway_tool_runner pinned_tools(platform::platform_adapter& adapter) {
    return [this, &adapter](const std::string& name, const std::string& args_json,
                            const std::string& ctx_json) -> boost::asio::awaitable<result<std::string>> {
      std::map<std::string, std::string> fields;
      rapidjson::Document ctx;
      ctx.Parse(ctx_json.c_str(), ctx_json.size());
      if (ctx.IsObject())
        for (const auto& m : ctx.GetObject())
          if (m.value.IsString()) fields[m.name.GetString()] = m.value.GetString();
      auto context = tools::call_context::from_map(fields);
      context.adapter = &adapter;
      auto out = co_await tool_registry->execute(name, args_json, std::move(context));
      co_return std::move(out.text);
    };
  }

    static redis::connection_settings pubsub_settings(const process& p, const char* name) {
    auto s = p.redis_config;
    s.metrics_name = name;
    return s;
  }

  redis::subscriber replies;
  platform::redis_platform redis_platform;
  platform::quotas quotas;
  platform::reply_hub hub;
  std::unique_ptr<tools::registry> tool_registry;
  platform::outbound_dispatcher redis_dispatch;
  std::shared_ptr<bus::outbound_consumer> outbound;
  redis::subscriber rooms;  // the web chat's room fan-out
  platform::webchat_platform webchat;
  platform::outbound_dispatcher webchat_dispatch;
  std::shared_ptr<bus::outbound_consumer> webchat_outbound;
  http::router routes;
  std::shared_ptr<http::http_server> server;
  std::unique_ptr<discord_parts> discord;
  std::unique_ptr<matrix_parts> matrix;
};

// Starts and stops an adapter that needs nothing else (its outbound consumer is added before it).
class platform_component final : public component {
public:
  explicit platform_component(platform::platform_adapter& adapter)
      : adapter_(adapter), name_("platform:" + std::string(adapter.name())) {}
  std::string_view name() const override { return name_; }
  boost::asio::awaitable<void> start() override { co_await adapter_.start(); }
  boost::asio::awaitable<void> stop(std::chrono::milliseconds) override { co_await adapter_.stop(); }

private:
  platform::platform_adapter& adapter_;
  std::string name_;
};

}  // namespace

gateway_handle add_gateway(process& p) {
  auto parts = std::make_shared<gateway_parts>(p);
  p.host.add(std::make_shared<subscriber_component>(parts->replies, parts->hub));
  p.host.add(parts->outbound);
  if (p.cfg.webchat_enabled) {
    p.host.add(parts->webchat_outbound);
    p.host.add(std::make_shared<adapter_component>(parts->webchat, parts->rooms, p.health));
  }
  if (parts->matrix) {
    p.host.add(parts->matrix->outbound);
    p.host.add(std::make_shared<platform_component>(parts->matrix->adapter));
  }
  if (parts->discord) {
    p.host.add(parts->discord->outbound);
    p.host.add(std::make_shared<platform_component>(parts->discord->adapter));
  }
  p.host.add(parts->server);
  return {parts, [server = parts->server] { return server->port(); }};
}

int run_gateway(const config& cfg) {
  process p(cfg, "stargazer-gateway-" + cfg.node_id);
  p.host.add(std::make_shared<redis_component>(p.redis, p.health));
  p.host.add(std::make_shared<stream_setup_component>(p.bus, role::gateway, gateway_platforms(), p.health));
  auto gateway = add_gateway(p);
  return p.host.run();
}

}  // namespace stargazer::roles
