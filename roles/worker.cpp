// The worker role: the inbound consumer. Until the message processor and the LLM client
// exist (see README: status), turns are answered by the offline echo responder: each
// addressed message is answered with its own text, through the bus like any reply.

#include "common.hpp"
#include "roles.hpp"

#include "stargazer/bus/inbound_consumer.hpp"
#include "stargazer/core/log.hpp"

namespace stargazer::roles {

namespace {

bus::turn_handler echo_responder(bus::event_bus& bus) {
  return [&bus](const bus::turn& t) -> boost::asio::awaitable<bus::outcome> {
    if (!t.message.is_addressed) co_return bus::outcome::ack();  // stored, not answered (seed)
    bus::outbound_envelope reply;
    reply.channel_id = t.message.channel_id;
    reply.text = t.message.content.empty() ? "(" + std::to_string(t.message.attachments.size()) + " attachments)"
                                           : t.message.content;
    reply.message_key = t.message_key(0);
    reply.response_nonce = t.message.response_nonce;
    reply.trace_id = t.message.trace_id;
    auto sent = co_await bus.publish_outbound(t.message.platform, reply);
    if (!sent) co_return bus::outcome::retry("reply not published: " + sent.error().message());
    co_return bus::outcome::ack();
  };
}

}  // namespace

std::shared_ptr<void> add_worker(process& p) {
  auto consumer = std::make_shared<bus::inbound_consumer>(p.redis, p.redis_config, p.bus, p.cfg.instance_id,
                                                          echo_responder(p.bus), bus::inbound_consumer_settings{},
                                                          &p.metrics);
  p.host.add(consumer);
  return consumer;
}

int run_worker(const config& cfg) {
  if (cfg.effective_llm_provider() != "echo") {
    log::logger("worker").error("--llm-provider {}: only the offline echo model is built yet", cfg.llm_provider);
    return 1;
  }
  process p(cfg, "stargazer-worker-" + cfg.instance_id);
  p.host.add(std::make_shared<redis_component>(p.redis, p.health));
  p.host.add(std::make_shared<stream_setup_component>(p.bus, role::worker, std::vector<std::string>{"redis"}, p.health));
  auto worker = add_worker(p);
  return p.host.run();
}

}  // namespace stargazer::roles
