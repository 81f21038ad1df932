#include "stargazer/bus/rpc_client.hpp"

#include "stargazer/bus/lock.hpp"
#include "stargazer/core/error.hpp"
#include "stargazer/core/json_value.hpp"

#include <boost/asio.hpp>

namespace stargazer::bus {

namespace asio = boost::asio;

struct rpc_client::impl {
  impl(event_bus& b, redis::connection_settings s, std::chrono::milliseconds t, std::size_t m)
      : bus(b), settings(std::move(s)), default_timeout(t), max_idle(m) {
    settings.health_check_interval = std::chrono::milliseconds(0);
    settings.metrics_name = "rpc";
  }

  event_bus& bus;
  redis::connection_settings settings;
  std::chrono::milliseconds default_timeout;
  std::size_t max_idle;
  std::vector<std::unique_ptr<redis::connection>> idle;

  std::unique_ptr<redis::connection> take(asio::any_io_executor ex) {
    if (!idle.empty()) {
      auto c = std::move(idle.back());
      idle.pop_back();
      return c;
    }
    auto c = std::make_unique<redis::connection>(ex, settings);
    c->start();
    return c;
  }

  void give_back(std::unique_ptr<redis::connection> c) {
    if (idle.size() < max_idle) idle.push_back(std::move(c));
  }
};

rpc_client::rpc_client(event_bus& bus, redis::connection_settings blocking, std::chrono::milliseconds default_timeout,
                       std::size_t max_idle)
    : impl_(std::make_shared<impl>(bus, std::move(blocking), default_timeout, max_idle)) {}

rpc_client::~rpc_client() = default;

asio::awaitable<result<rpc_reply>> rpc_client::call(const std::string& platform, const std::string& method,
                                                    const std::string& args_json, const std::string& channel_id,
                                                    const std::string& trace_id,
                                                    std::optional<std::chrono::milliseconds> timeout) {
  auto self = impl_;
  const auto wait = timeout.value_or(self->default_timeout);
  outbound_envelope e;
  e.type = outbound_type::rpc_request;
  e.request_id = random_hex_id();
  e.reply_key = "sg:rpc:reply:" + e.request_id;
  e.rpc_method = method;
  e.rpc_args_json = args_json.empty() ? "{}" : args_json;
  e.channel_id = channel_id;
  e.trace_id = trace_id;
  e.deadline = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch() + wait).count();
  auto published = co_await self->bus.publish_outbound(platform, e);
  if (!published) co_return published.error();

  auto conn = self->take(co_await asio::this_coro::executor);
  redis::request blpop(redis::request::options{.timeout = wait + std::chrono::seconds(2)});
  blpop.push("BLPOP", e.reply_key, std::to_string(std::max<double>(0.01, std::chrono::duration<double>(wait).count())));
  auto r = co_await conn->exec_one(std::move(blpop));
  if (r) self->give_back(std::move(conn));  // a failed connection is dropped, not reused
  if (!r) co_return r.error();
  if (r->is_nil()) co_return make_error_code(errc::timeout);
  if (!r->is_array() || r->elements().size() != 2) co_return make_error_code(errc::unexpected_reply);

  auto parsed = json::parse_object(r->elements()[1].str());
  if (std::holds_alternative<std::string>(parsed)) co_return make_error_code(errc::decode_error);
  const auto& doc = std::get<rapidjson::Document>(parsed);
  rpc_reply reply;
  reply.ok = doc.HasMember("ok") && doc["ok"].IsBool() && doc["ok"].GetBool();
  if (reply.ok && doc.HasMember("result")) reply.result_json = json::to_string(doc["result"]);
  if (doc.HasMember("error") && doc["error"].IsString()) reply.error = doc["error"].GetString();
  co_return reply;
}

}  // namespace stargazer::bus
