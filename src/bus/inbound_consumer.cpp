#include "stargazer/bus/inbound_consumer.hpp"

#include "stargazer/core/log.hpp"
#include "stargazer/core/metrics.hpp"

#include <boost/asio.hpp>

namespace stargazer::bus {

namespace asio = boost::asio;

struct inbound_consumer::impl {
  impl(redis::connection& c, event_bus& b, turn_handler h, inbound_consumer_settings s, metrics::registry* m)
      : commands(c), bus(b), handler(std::move(h)), settings(std::move(s)), log("inbound") {
    if (m != nullptr) {
      const auto state = [&](const char* name) {
        return &m->make_counter("stargazer_trace_transitions_total", "Inbound turns by lifecycle state",
                                {{"state", name}});
      };
      claimed = state("CLAIMED");
      completed = state("COMPLETED");
      errored = state("ERRORED");
    }
  }

  redis::connection& commands;
  event_bus& bus;
  turn_handler handler;
  inbound_consumer_settings settings;
  log::logger log;
  std::unique_ptr<channel_sequencer> sequencer;
  std::unique_ptr<stream_consumer> consumer;
  metrics::counter* claimed = nullptr;
  metrics::counter* completed = nullptr;
  metrics::counter* errored = nullptr;

  void transition(metrics::counter* counter, const char* state, const turn& t, std::string_view detail = {}) {
    if (counter != nullptr) counter->inc();
    log.log(state[0] == 'E' ? log::level::warn : log::level::debug, {{"trace_id", t.message.trace_id}}, "{} {} {}{}{}",
            state, t.message.channel_id, t.entry_id, detail.empty() ? "" : ": ", detail);
  }

  asio::awaitable<outcome> run_turn(const turn& t) {
    const auto done_key = inbound_done_key(t.entry_id);
    // Reclaimed while its first run was finishing, or run again here because what came
    // after the turn failed: it is done, only the ack was lost. Sequenced entries (every
    // entry our gateways publish) are known done by their channel's order mark
    // (channel_sequencer); only the others need a marker of their own. (A first run
    // cannot be done yet, so it skips the round trip.)
    if (!t.sequenced && (t.attempt.reclaimed || t.attempt.local_retry > 0)) {
      auto done = co_await commands.command("EXISTS", done_key);
      if (done && done->is_integer() && done->integer() == 1) co_return outcome::ack();
    }

    transition(claimed, "CLAIMED", t);
    outcome result;
    try {
      result = co_await handler(t);
    } catch (const std::exception& e) {
      result = outcome::retry(std::string("handler threw: ") + e.what());
    }
    if (result.what == outcome::kind::retry) {
      transition(errored, "ERRORED", t, result.reason);
      co_return result;
    }
    if (!t.message.response_nonce.empty() && !t.completion_published) {
      outbound_envelope complete;
      complete.type = outbound_type::turn_complete;
      complete.channel_id = t.message.channel_id;
      complete.response_nonce = t.message.response_nonce;
      complete.trace_id = t.message.trace_id;
      auto published = co_await bus.publish_outbound(t.message.platform, complete);
      if (!published) {
        transition(errored, "ERRORED", t, "turn_complete not published");
        co_return outcome::retry("turn_complete not published: " + published.error().message());
      }
    }
    if (!t.sequenced) co_await commands.command("SET", done_key, "1", "EX", settings.done_marker_ttl.count());
    if (result.what == outcome::kind::ack) transition(completed, "COMPLETED", t);
    else transition(errored, "ERRORED", t, result.reason);
    co_return result;
  }
};

inbound_consumer::inbound_consumer(redis::connection& commands, const redis::connection_settings& blocking,
                                   event_bus& bus, const std::string& consumer_name, turn_handler handler,
                                   inbound_consumer_settings settings, metrics::registry* metrics)
    : impl_(std::make_shared<impl>(commands, bus, std::move(handler), std::move(settings), metrics)) {
  auto& cs = impl_->settings.consumer;
  if (cs.stream.empty()) cs.stream = bus.names().inbound_stream;
  if (cs.group.empty()) cs.group = bus.names().worker_group;
  if (cs.consumer.empty()) cs.consumer = consumer_name;
  auto& os = impl_->settings.order;
  if (os.stream.empty()) os.stream = cs.stream;
  if (os.lock_prefix.empty()) os.lock_prefix = "sg:lock:inbound:";
  impl_->sequencer = std::make_unique<channel_sequencer>(commands, os, metrics);

  auto* self = impl_.get();
  entry_handler h = [self](const stream_entry& entry, const delivery& d) -> asio::awaitable<outcome> {
    if (!entry.has("data")) co_return outcome::dead_letter("missing_data: no data field");
    auto decoded = decode_inbound(entry.field("data"));
    if (auto* failure = std::get_if<decode_failure>(&decoded)) co_return outcome::dead_letter(failure->reason());
    turn t{entry.id, std::move(std::get<inbound_envelope>(decoded)), d};
    t.sequenced = !entry.field("okey").empty() && !entry.field("seq").empty();
    co_return co_await self->sequencer->run_in_order(entry, d, [&](order_mark& mark) {
      t.order = &mark;
      return self->run_turn(t);
    });
  };
  cs.after_dead_letter = [self](const stream_entry& e) { return self->sequencer->skip(e); };
  impl_->consumer = std::make_unique<stream_consumer>(commands, blocking, cs, std::move(h), metrics);
}

inbound_consumer::~inbound_consumer() = default;

asio::awaitable<void> inbound_consumer::start() { co_await impl_->consumer->start(); }
asio::awaitable<void> inbound_consumer::stop(std::chrono::milliseconds deadline) {
  co_await impl_->consumer->stop(deadline);
}
stream_consumer& inbound_consumer::engine() { return *impl_->consumer; }

}  // namespace stargazer::bus
