#include "stargazer/bus/outbound_consumer.hpp"

#include "stargazer/core/failpoint.hpp"
#include "stargazer/core/json.hpp"
#include "stargazer/core/log.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <chrono>

namespace stargazer::bus {

namespace asio = boost::asio;

namespace {

// One round trip for the completion-marker check and claim: "done" when the completion
// marker is set, "claimed" when we took the claim, "busy" when another delivery holds it.
// The claim holds the entry id: a redelivery of the same entry (its first delivery died
// mid-send) takes the claim over instead of dropping the reply.
const redis::script& claim_script() {
  static const redis::script s(R"lua(
local sent = redis.call('HGET', KEYS[1], 'message_id')
if sent and string.len(sent) > 0 then return 'done' end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then return 'claimed' end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  return 'claimed'
end
return 'busy'
)lua");
  return s;
}

// Message-id re-sync: the completion marker, with the 90-day expiry on a new key.
const redis::script& resync_script() {
  static const redis::script s(R"lua(
local existed = redis.call('EXISTS', KEYS[1])
redis.call('HSET', KEYS[1], 'message_id', ARGV[1])
if existed == 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return existed
)lua");
  return s;
}

}  // namespace

struct outbound_consumer::impl : std::enable_shared_from_this<impl> {
  impl(redis::connection& c, const topology& names, const std::string& consumer_name, outbound_handler& h,
       outbound_consumer_settings s, metrics::registry* m)
      : commands(c), handler(h), settings(std::move(s)), log("outbound:" + std::string(h.platform())) {
    const std::string platform(h.platform());
    auto& cs = settings.consumer;
    if (cs.stream.empty()) cs.stream = names.outbound_stream(platform);
    if (cs.group.empty()) cs.group = names.gateway_group(platform);
    if (cs.consumer.empty()) cs.consumer = consumer_name;
    auto& os = settings.order;
    if (os.stream.empty()) os.stream = cs.stream;
    if (os.lock_prefix.empty()) os.lock_prefix = "sg:lock:outbound:" + platform + ":";
    sequencer = std::make_unique<channel_sequencer>(c, os, m);
  }

  redis::connection& commands;
  outbound_handler& handler;
  outbound_consumer_settings settings;
  log::logger log;
  std::unique_ptr<channel_sequencer> sequencer;
  std::unique_ptr<stream_consumer> consumer;

  // RPC requests are answered before any locking: a worker waits on them mid-turn.
  asio::awaitable<outcome> answer_rpc(const outbound_envelope& e) {
    const auto now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    if (e.deadline != 0 && e.deadline < now) co_return outcome::ack();  // the caller gave up already
    rpc_reply answer;
    try {
      answer = co_await handler.answer(e);
    } catch (const std::exception& ex) {
      answer = rpc_reply{.ok = false, .error = ex.what()};
    }
    std::string reply = fmt::format(R"({{"v":1,"request_id":{},)", json::quoted(e.request_id));
    if (answer.ok) reply += R"("ok":true,"result":)" + (answer.result_json.empty() ? "null" : answer.result_json) + "}";
    else reply += R"("ok":false,"error":)" + json::quoted(answer.error) + "}";
    redis::request req;
    req.push("RPUSH", e.reply_key, reply).push("EXPIRE", e.reply_key, settings.rpc_reply_ttl.count());
    auto r = co_await commands.exec(std::move(req));
    if (!r) co_return outcome::retry("RPC reply not written: " + r.error().message());
    co_return outcome::ack();
  }

  asio::awaitable<outcome> deliver(const stream_entry& entry, const outbound_envelope& e, order_mark& mark) {
    const bool idempotent_send =
        !e.message_key.empty() && (e.type == outbound_type::message || e.type == outbound_type::file ||
                                   e.type == outbound_type::buttons);
    // A platform that is Redis checks, sends, marks and ends the turn in one script, the
    // order mark included.
    if (handler.delivers_atomically()) {
      const auto sent = co_await handler.deliver(e, &mark);
      if (!sent)
        co_return outcome::retry(fmt::format("{} to {} failed: {}", to_string(e.type), e.channel_id, sent.error().message()));
      failpoint("outbound.delivered");
      co_return outcome::ack();
    }
    if (idempotent_send) {
      const std::vector<std::string> keys{e.message_key, claim_key(e.message_key)};
      const std::vector<std::string> args{entry.id, std::to_string(settings.claim_ttl.count())};
      auto claim = co_await commands.eval(claim_script(), keys, args);
      if (!claim || claim->is_error()) co_return outcome::retry("claim failed");
      if (claim->str() != "claimed") {
        log.log(log::level::debug, {{"trace_id", e.trace_id}}, "{} already {}; not sent again", e.message_key,
                claim->str() == "done" ? "delivered" : "being delivered");
        // Delivered before, maybe by a gateway that died before signalling the end of the
        // turn: signal it (again). A repeated turn_complete is harmless, a missing one
        // leaves a `wait=true` caller waiting.
        if (claim->str() == "done" && ends_turn(e)) co_await handler.turn_complete(e.channel_id, e.response_nonce);
        co_return outcome::ack();
      }
    }
    const auto sent = co_await handler.deliver(e, nullptr);
    if (!sent) {
      if (idempotent_send) co_await commands.command("DEL", claim_key(e.message_key));  // let a retry proceed
      co_return outcome::retry(fmt::format("{} to {} failed: {}", to_string(e.type), e.channel_id, sent.error().message()));
    }
    // Tests: the platform has the message, this entry is not acknowledged and its marker
    // may be missing; the redelivery must not post it twice.
    failpoint("outbound.delivered");
    if (ends_turn(e)) co_await handler.turn_complete(e.channel_id, e.response_nonce);
    if (idempotent_send && !sent->empty() && !handler.writes_delivery_marker()) {
      const std::vector<std::string> keys{e.message_key};
      const std::vector<std::string> args{*sent, std::to_string(settings.message_key_ttl.count())};
      auto r = co_await commands.eval(resync_script(), keys, args);
      if (!r) log.warn("message-id re-sync of {} failed: {}", e.message_key, r.error().message());
    }
    co_return outcome::ack();
  }
};

outbound_consumer::outbound_consumer(redis::connection& commands, const redis::connection_settings& blocking,
                                     const topology& names, const std::string& consumer_name,
                                     outbound_handler& handler, outbound_consumer_settings settings,
                                     metrics::registry* metrics)
    : impl_(std::make_shared<impl>(commands, names, consumer_name, handler, std::move(settings), metrics)) {
  auto* self = impl_.get();
  // Decoding and RPC come first; everything else runs in channel order.
  entry_handler on_entry = [self](const stream_entry& entry, const delivery& d) -> asio::awaitable<outcome> {
    if (!entry.has("data")) co_return outcome::dead_letter("missing_data: no data field");
    auto decoded = decode_outbound(entry.field("data"));
    if (auto* failure = std::get_if<decode_failure>(&decoded)) co_return outcome::dead_letter(failure->reason());
    const auto& e = std::get<outbound_envelope>(decoded);
    if (e.type == outbound_type::rpc_request) co_return co_await self->answer_rpc(e);
    co_return co_await self->sequencer->run_in_order(
        entry, d, [&](order_mark& mark) { return self->deliver(entry, e, mark); });
  };
  impl_->settings.consumer.after_dead_letter = [self](const stream_entry& e) { return self->sequencer->skip(e); };
  impl_->consumer = std::make_unique<stream_consumer>(commands, blocking, impl_->settings.consumer, std::move(on_entry), metrics);
}

outbound_consumer::~outbound_consumer() = default;

std::string_view outbound_consumer::name() const { return impl_->log.component(); }
asio::awaitable<void> outbound_consumer::start() { co_await impl_->consumer->start(); }
asio::awaitable<void> outbound_consumer::stop(std::chrono::milliseconds deadline) {
  co_await impl_->consumer->stop(deadline);
}
stream_consumer& outbound_consumer::engine() { return *impl_->consumer; }

}  // namespace stargazer::bus
