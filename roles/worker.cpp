// The worker role: the inbound consumer hands each turn to the
// message processor with a proxy adapter bound to the turn; the status leader lease lets
// one worker drive presence (a status line the model writes); the heartbeat, under its
// own lease, looks in on quiet channels; `sg:pubsub:config` reloads the configuration in
// place.

#include "common.hpp"
#include "roles.hpp"

#include "stargazer/bus/inbound_consumer.hpp"
#include "stargazer/bus/rpc_client.hpp"
#include "stargazer/core/spawn.hpp"
#include "stargazer/core/log.hpp"
#include "settings.hpp"
#include "stargazer/platform/message_cache.hpp"
#include "stargazer/platform/quota.hpp"
#include "stargazer/tools/dispatcher.hpp"
#include "stargazer/tools/remote.hpp"
#include "stargazer/worker/channel_state.hpp"
#include "stargazer/worker/group_chat_rules.hpp"
#include "stargazer/worker/heartbeat.hpp"
#include "stargazer/worker/leader_lease.hpp"
#include "stargazer/worker/message_processor.hpp"
#include "stargazer/worker/proxy_adapter.hpp"

#include <boost/asio.hpp>
#include <rapidjson/document.h>

namespace stargazer::roles {

namespace asio = boost::asio;

namespace {

constexpr const char* config_channel = "sg:pubsub:config";
// Cached messages the worker remembers for history reads (a few MB at most; see
// message_cache): about 500 busy channels' contexts of 20.
constexpr std::size_t history_memo_capacity = 10'000;

std::chrono::milliseconds seconds_to_ms(double s) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(s * 1000));
}

// The worker's parts; lives until the process's host has stopped.
struct worker_parts : std::enable_shared_from_this<worker_parts> {
  explicit worker_parts(process& p)
      : proc(p),
        cfg(p.cfg),
        rpc(p.bus, p.redis_config),
        cache(p.redis, history_memo_capacity),
        channels(p.redis),
        quotas(p.redis, &p.metrics),
        tool_registry(make_tool_registry(p.cfg, p.redis)),
        remote_tools(p.cfg.tools_mode == "remote"
                         ? std::make_shared<tools::remote_tool_client>(p.redis, p.redis_config, p.bus,
                                                                       p.cfg.node_id, &p.metrics)
                         : nullptr),
        tool_dispatcher(*tool_registry,
                        remote_tools ? tools::execution_mode::remote : tools::execution_mode::in_process,
                        remote_tools.get()),
        processor(cache, llm::make_client(p.cfg, p.io.get_executor(), &p.metrics),
                  worker::processor_settings_from(p.cfg), &tool_dispatcher, &p.metrics, &channels, &quotas),
        lease(std::make_shared<worker::leader_lease>(
            p.redis, p.cfg.node_id,
            worker::leader_lease_settings::for_interval(seconds_to_ms(std::max(p.cfg.presence_interval_seconds, 1.0))),
            &p.metrics)),
        config_updates(p.io.get_executor(), config_subscriber_settings(p), &p.metrics),
        presence_text(p.cfg.presence_text),
        log("worker") {
    quotas.batch_usage(true);
  }

  static redis::connection_settings config_subscriber_settings(const process& p) {
    auto s = p.redis_config;
    s.metrics_name = "config-pubsub";
    return s;
  }

  bus::turn_handler handler() {
    return [this](const bus::turn& t) -> asio::awaitable<bus::outcome> {
      auto message = worker::incoming_message_from(t.message);
      worker::proxy_adapter adapter(proc.bus, rpc, message.platform, identity(), &t);
      co_return co_await processor.handle(message, adapter);
    };
  }

  platform::bot_identity identity() const { return {"star", processor.settings().bot_name}; }

  // Adapters for sends and RPCs outside a turn (the heartbeat's).
  worker::adapter_factory adapters() {
    return [this](const std::string& platform) -> std::unique_ptr<platform::platform_adapter> {
      return std::make_unique<worker::proxy_adapter>(proc.bus, rpc, platform, identity());
    };
  }

  void announce() const {
    const auto& model = processor.model();
    if (model.provider() == "echo")
      log.info("no LLM API key configured: the offline echo model answers (set SG_LLM_API_KEY for a real model)");
    else
      log.info("LLM: {} model {} at {}", model.provider(), model.model(), cfg.llm_base_url);
    log.info("tools run {}", remote_tools ? "on the tools service (remote)" : "in this process");
  }

  // The status line: the model's, from its <dstatus> tag, else --presence-text.
  asio::awaitable<worker::status_line> compose_status() {
    const auto bot_name = processor.settings().bot_name;
    const auto model_name = processor.settings().model;
    auto model = processor.shared_model();
    const auto request = worker::status_request(bot_name, model_name);
    std::optional<llm::outcome> out;
    try {
      out = co_await model->complete(request);
    } catch (const std::exception& e) {
      log.warn("status model call failed: {}", e.what());
    }
    if (const auto* c = out ? std::get_if<llm::completion>(&*out) : nullptr) {
      if (auto line = worker::extract_dstatus(c->content)) co_return std::move(*line);
      log.info("the model's status has no valid <dstatus> tag; presence uses --presence-text");
    } else if (const auto* f = out ? std::get_if<llm::failure>(&*out) : nullptr) {
      log.warn("status model call failed ({}): {}; presence uses --presence-text", llm::to_string(f->what),
               f->detail);
    }
    co_return worker::fallback_status(presence_text, bot_name);
  }

  // The status leader publishes presence to every platform's gateways.
  asio::awaitable<void> drive_presence() {
    if (cfg.presence_interval_seconds <= 0) co_return;
    auto self = shared_from_this();
    asio::steady_timer timer(co_await asio::this_coro::executor);
    while (!stopped) {
      timer.expires_after(seconds_to_ms(cfg.presence_interval_seconds));
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (stopped || !lease->is_leader()) continue;
      const auto line = co_await compose_status();
      for (const auto& platform : gateway_platforms()) {
        worker::proxy_adapter adapter(proc.bus, rpc, platform, identity());
        try {
          co_await adapter.set_presence(line.text, line.emoji);
        } catch (const std::exception& e) {
          log.warn("presence not published: {}", e.what());
        }
      }
    }
  }

  // Turns' usage is summed in memory and written once a second (quotas::batch_usage).
  asio::awaitable<void> flush_usage_every_second() {
    auto self = shared_from_this();
    asio::steady_timer timer(co_await asio::this_coro::executor);
    while (!stopped) {
      timer.expires_after(std::chrono::seconds(1));
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (stopped) break;  // stop() flushes
      if (auto failed = co_await quotas.flush_usage())
        log.warn("usage not recorded: {}", failed.message());
    }
  }

  // Config hot reload: each {"event":"sys:config:updated"} re-reads the
  // configuration; a bad file is logged and the running configuration kept.
  asio::awaitable<void> listen_for_config_updates() {
    auto self = shared_from_this();
    std::vector<std::string> channels{config_channel};
    co_await config_updates.subscribe(std::move(channels));
    while (!stopped) {
      auto message = co_await config_updates.receive();
      if (!message) break;  // stopped
      rapidjson::Document doc;
      doc.Parse(message->payload.c_str(), message->payload.size());
      if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("event") || !doc["event"].IsString()) {
        log.warn("ignoring a malformed message on {}", config_channel);
        continue;
      }
      if (std::string_view(doc["event"].GetString()) == "sys:config:updated") reload();
    }
  }

  void reload() {
    auto reloaded = reload_config(cfg);
    if (auto* error = std::get_if<std::string>(&reloaded)) {
      log.error("config reload refused, keeping the running configuration: {}", *error);
      return;
    }
    auto& next = std::get<config>(reloaded);
    try {
      auto settings = worker::processor_settings_from(next);
      processor.reconfigure(std::move(settings), llm::make_client(next, proc.io.get_executor(), &proc.metrics));
      presence_text = next.presence_text;
      tool_registry->set_permissions(std::get<0>(tools::parse_permissions(next.tool_permissions)));
    } catch (const std::exception& e) {
      log.error("config reload refused, keeping the running configuration: {}", e.what());
      return;
    }
    log::configure(*log::parse_level(next.log_level), *log::parse_format(next.log_format));
    log.info("configuration reloaded (model {}, history {} messages)", processor.model().model(),
             processor.settings().history_messages);
  }

  process& proc;
  const config& cfg;
  bus::rpc_client rpc;
  platform::message_cache cache;
  worker::channel_state channels;
  platform::quotas quotas;  // the limits themselves are in the processor's settings (reloaded with them)
  std::unique_ptr<tools::registry> tool_registry;
  std::shared_ptr<tools::remote_tool_client> remote_tools;
  tools::dispatcher tool_dispatcher;
  worker::message_processor processor;
  std::shared_ptr<worker::leader_lease> lease;
  redis::subscriber config_updates;
  std::string presence_text;  // reloaded with the configuration
  log::logger log;
  bool stopped = false;
};

// Starts the background loops with the process and stops them with it.
class worker_loops final : public component {
public:
  explicit worker_loops(std::shared_ptr<worker_parts> parts) : parts_(std::move(parts)) {}
  std::string_view name() const override { return "worker-loops"; }
  asio::awaitable<void> start() override {
    parts_->announce();
    parts_->config_updates.start();
    auto ex = co_await asio::this_coro::executor;
    spawn(ex, parts_->listen_for_config_updates(), "config-reload");
    spawn(ex, parts_->drive_presence(), "presence");
    spawn(ex, parts_->flush_usage_every_second(), "usage-flush");
  }
  asio::awaitable<void> stop(std::chrono::milliseconds) override {
    parts_->stopped = true;
    parts_->config_updates.stop();
    // Stopped after the consumer (components stop in reverse): no turn records after this.
    // A periodic flush in flight may put its sums back when it fails: wait for it, then
    // flush what is left (briefly: a Redis that is away loses the last second).
    auto& quotas = parts_->quotas;
    asio::steady_timer pause(co_await asio::this_coro::executor);
    for (int tries = 0; tries < 40 && (quotas.usage_flush_in_flight() || quotas.usage_pending()); ++tries) {
      if (!quotas.usage_flush_in_flight()) {
        if (auto ec = co_await quotas.flush_usage()) {
          parts_->log.warn("usage of the last second not recorded: {}", ec.message());
          break;
        }
        continue;
      }
      pause.expires_after(std::chrono::milliseconds(50));
      boost::system::error_code ignored;
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    }
  }

private:
  std::shared_ptr<worker_parts> parts_;
};

}  // namespace

std::shared_ptr<void> add_worker(process& p) {
  auto parts = std::make_shared<worker_parts>(p);
  if (parts->remote_tools) p.host.add(parts->remote_tools);
  add_mcp_tools(p, *parts->tool_registry, parts->remote_tools == nullptr);
  auto consumer = std::make_shared<bus::inbound_consumer>(p.redis, p.redis_config, p.bus, p.cfg.node_id,
                                                          parts->handler(), bus::inbound_consumer_settings{},
                                                          &p.metrics);
  p.host.add(parts->lease);
  p.host.add(std::make_shared<worker_loops>(parts));
  if (p.cfg.heartbeat_interval_seconds > 0) {
    const auto heartbeat_settings = worker::heartbeat_settings_from(p.cfg);
    // Its own lease (not the status one): its timing follows the heartbeat's tick.
    auto heartbeat_lease = std::make_shared<worker::leader_lease>(
        p.redis, p.cfg.node_id, worker::heartbeat_lease_settings(heartbeat_settings));
    p.host.add(heartbeat_lease);
    p.host.add(std::make_shared<worker::heartbeat>(p.redis, parts->processor, heartbeat_lease, parts->adapters(),
                                                   heartbeat_settings, &p.metrics));
  }
  p.host.add(consumer);
  return std::make_shared<std::pair<std::shared_ptr<worker_parts>, std::shared_ptr<bus::inbound_consumer>>>(
      parts, consumer);
}

int run_worker(const config& cfg) {
  process p(cfg, "stargazer-worker-" + cfg.node_id);
  p.host.add(std::make_shared<redis_component>(p.redis, p.health));
  p.host.add(std::make_shared<stream_setup_component>(p.bus, role::worker, gateway_platforms(), p.health));
  auto worker = add_worker(p);
  auto health = add_health_server(p);
  return p.host.run();
}

}  // namespace stargazer::roles
