#include "stargazer/bus/outbound_consumer.hpp"

#include "stargazer/platform/history_json.hpp"

#include "stargazer/core/json.hpp"
#include "stargazer/core/log.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <chrono>

namespace stargazer::bus {

namespace asio = boost::asio;

namespace {

// One round trip for the seed's marker check and claim: "done" when the completion
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
  impl(redis::connection& c, const topology& names, const std::string& consumer_name,
       platform::platform_adapter& a, outbound_consumer_settings s, metrics::registry* m, gateway_tool_runner t)
      : commands(c), adapter(a), settings(std::move(s)), tools(std::move(t)), log("outbound:" + std::string(a.name())) {
    const std::string platform(a.name());
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
  platform::platform_adapter& adapter;
  outbound_consumer_settings settings;
  gateway_tool_runner tools;
  log::logger log;
  std::unique_ptr<channel_sequencer> sequencer;
  std::unique_ptr<stream_consumer> consumer;

  // RPC requests are answered before any locking (seed 002).
  asio::awaitable<outcome> answer_rpc(const outbound_envelope& e) {
    const auto now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    std::string reply = fmt::format(R"({{"v":1,"request_id":{},)", json::quoted(e.request_id));
    if (e.deadline != 0 && e.deadline < now) co_return outcome::ack();  // the caller gave up already
    rapidjson::Document args;
    args.Parse(e.rpc_args_json.c_str(), e.rpc_args_json.size());
    if (args.HasParseError() || !args.IsObject()) args.SetObject();
    const auto int_arg = [&](const char* name, int fallback) {
      return args.HasMember(name) && args[name].IsInt() ? args[name].GetInt() : fallback;
    };
    const auto str_arg = [&](const char* name) {
      return args.HasMember(name) && args[name].IsString() ? std::string(args[name].GetString(), args[name].GetStringLength())
                                                           : std::string();
    };
    try {
      if (e.rpc_method == "fetch_channel_history") {
        auto history = co_await adapter.fetch_history(e.channel_id, std::clamp(int_arg("limit", 10), 0, 1000));
        reply += R"("ok":true,"result":)" + platform::history_to_json(history) + "}";
      } else if (e.rpc_method == "should_skip_channel_heartbeat") {
        const bool skip = co_await adapter.should_skip_channel_heartbeat(e.channel_id);
        reply += std::string(R"("ok":true,"result":)") + (skip ? "true" : "false") + "}";
      } else if (e.rpc_method == "is_channel_valid") {
        const bool valid = co_await adapter.is_channel_valid(e.channel_id);
        reply += std::string(R"("ok":true,"result":)") + (valid ? "true" : "false") + "}";
      } else if (e.rpc_method == "execute_tool" && tools) {
        auto r = co_await tools(str_arg("tool_name"), args.HasMember("tool_args") ? http_json(args["tool_args"]) : "{}",
                                args.HasMember("tool_ctx") ? http_json(args["tool_ctx"]) : "{}");
        if (r) reply += R"("ok":true,"result":)" + json::quoted(*r) + "}";
        else reply += R"("ok":false,"error":)" + json::quoted(r.error().message()) + "}";
      } else {
        reply += R"("ok":false,"error":)" + json::quoted("Unknown RPC method: " + e.rpc_method) + "}";
      }
    } catch (const std::exception& ex) {
      reply = fmt::format(R"({{"v":1,"request_id":{},"ok":false,"error":{}}})", json::quoted(e.request_id),
                          json::quoted(ex.what()));
    }
    redis::request req;
    req.push("RPUSH", e.reply_key, reply).push("EXPIRE", e.reply_key, settings.rpc_reply_ttl.count());
    auto r = co_await commands.exec(std::move(req));
    if (!r) co_return outcome::retry("RPC reply not written: " + r.error().message());
    co_return outcome::ack();
  }

  static std::string http_json(const rapidjson::Value& v) {
    rapidjson::StringBuffer buf;
    rapidjson::Writer<rapidjson::StringBuffer> w(buf);
    v.Accept(w);
    return {buf.GetString(), buf.GetSize()};
  }

  static bool completes_turn(const outbound_envelope& e) {
    return e.completes_turn && !e.response_nonce.empty() &&
           (e.type == outbound_type::message || e.type == outbound_type::file || e.type == outbound_type::buttons);
  }

  asio::awaitable<outcome> deliver(const stream_entry& entry, const outbound_envelope& e) {
    const platform::send_context ctx{e.trace_id, e.response_nonce, e.message_key};
    const bool idempotent_send =
        !e.message_key.empty() && (e.type == outbound_type::message || e.type == outbound_type::file ||
                                   e.type == outbound_type::buttons);
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
        if (claim->str() == "done" && completes_turn(e)) co_await adapter.turn_complete(e.channel_id, e.response_nonce);
        co_return outcome::ack();
      }
    }
    result<std::string> sent = std::string();
    switch (e.type) {
      case outbound_type::message: sent = co_await adapter.send(e.channel_id, e.text, ctx); break;
      case outbound_type::file:
        sent = co_await adapter.send_file(e.channel_id, e.file_data, e.filename, e.mimetype, ctx);
        break;
      case outbound_type::buttons: sent = co_await adapter.send_with_buttons(e.channel_id, e.text, e.buttons, ctx); break;
      case outbound_type::typing:
      case outbound_type::start_typing: co_await adapter.start_typing(e.channel_id); break;
      case outbound_type::stop_typing: co_await adapter.stop_typing(e.channel_id); break;
      case outbound_type::reaction:
        if (!co_await adapter.add_reaction(e.channel_id, e.message_id, e.emoji))
          log.warn("{} has no reactions; dropped", adapter.name());
        break;
      case outbound_type::presence: co_await adapter.set_presence(e.text, e.emoji); break;
      case outbound_type::turn_complete: co_await adapter.turn_complete(e.channel_id, e.response_nonce); break;
      case outbound_type::rpc_request: break;  // answered earlier
    }
    if (!sent) {
      if (idempotent_send) co_await commands.command("DEL", claim_key(e.message_key));  // let a retry proceed
      co_return outcome::retry(fmt::format("{} to {} failed: {}", to_string(e.type), e.channel_id, sent.error().message()));
    }
    if (completes_turn(e)) co_await adapter.turn_complete(e.channel_id, e.response_nonce);
    if (idempotent_send && !sent->empty()) {
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
                                     platform::platform_adapter& adapter, outbound_consumer_settings settings,
                                     metrics::registry* metrics, gateway_tool_runner tools)
    : impl_(std::make_shared<impl>(commands, names, consumer_name, adapter, std::move(settings), metrics,
                                   std::move(tools))) {
  auto* self = impl_.get();
  // Decoding and RPC come first; everything else runs in channel order.
  entry_handler handler = [self](const stream_entry& entry, const delivery& d) -> asio::awaitable<outcome> {
    if (!entry.has("data")) co_return outcome::dead_letter("missing_data: no data field");
    auto decoded = decode_outbound(entry.field("data"));
    if (auto* failure = std::get_if<decode_failure>(&decoded)) co_return outcome::dead_letter(failure->reason());
    const auto& e = std::get<outbound_envelope>(decoded);
    if (e.type == outbound_type::rpc_request) co_return co_await self->answer_rpc(e);
    co_return co_await self->sequencer->run_in_order(entry, d, [&]() { return self->deliver(entry, e); });
  };
  impl_->settings.consumer.after_dead_letter = [self](const stream_entry& e) { return self->sequencer->skip(e); };
  impl_->consumer = std::make_unique<stream_consumer>(commands, blocking, impl_->settings.consumer, std::move(handler), metrics);
}

outbound_consumer::~outbound_consumer() = default;

std::string_view outbound_consumer::name() const { return impl_->log.component(); }
asio::awaitable<void> outbound_consumer::start() { co_await impl_->consumer->start(); }
asio::awaitable<void> outbound_consumer::stop(std::chrono::milliseconds deadline) {
  co_await impl_->consumer->stop(deadline);
}
stream_consumer& outbound_consumer::engine() { return *impl_->consumer; }

}  // namespace stargazer::bus
