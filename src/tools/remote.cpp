#include "stargazer/tools/remote.hpp"

#include "stargazer/bus/lock.hpp"
#include "stargazer/bus/stream_entry.hpp"
#include "stargazer/core/spawn.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/metrics.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <map>

namespace stargazer::tools {

namespace asio = boost::asio;

namespace {

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

constexpr std::chrono::milliseconds reply_block{5000};

tool_output failed(std::string why) { return tool_output{error_text(why), {}}; }

}  // namespace

// ---- worker side --------------------------------------------------------------------------

struct remote_tool_client::impl : std::enable_shared_from_this<impl> {
  struct waiter {
    explicit waiter(asio::any_io_executor ex) : timer(ex) {}
    asio::steady_timer timer;
    std::optional<tool_output> output;
  };

  impl(redis::connection& c, redis::connection_settings b, bus::event_bus& bus_, std::string worker_id,
       metrics::registry* m)
      : commands(c), bus(bus_), stream(bus_.names().tools_reply_stream(worker_id)), log("remote-tools") {
    b.health_check_interval = std::chrono::milliseconds(0);  // a blocked connection answers nothing else
    b.command_timeout = reply_block + std::chrono::seconds(10);
    b.metrics_name = "blocking:" + stream;
    blocking = std::make_unique<redis::connection>(c.get_executor(), std::move(b), m);
    if (m != nullptr) {
      late = &m->make_counter("stargazer_tool_replies_dropped_total",
                              "Tool replies that found no waiter (late or duplicated)");
      timeouts = &m->make_counter("stargazer_tool_remote_timeouts_total", "Remote tool calls that passed their deadline");
    }
  }

  asio::awaitable<void> read_loop() {
    auto self = shared_from_this();
    std::string last_id = "0-0";  // the stream is this process's own
    while (running) {
      redis::request req;
      req.push("XREAD", "COUNT", 100, "BLOCK", reply_block.count(), "STREAMS", stream, last_id);
      auto r = co_await blocking->exec_one(std::move(req));
      if (!running) break;
      if (!r || r->is_error()) {
        log.warn("XREAD {} failed: {}", stream, r ? r->str() : r.error().message());
        asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::seconds(1));
        boost::system::error_code ec;
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      for (auto& entry : bus::parse_xread(*r)) {
        last_id = entry.id;
        auto decoded = bus::decode_tool_reply(entry.field("data"));
        if (auto* failure = std::get_if<bus::decode_failure>(&decoded)) {
          log.warn("undecodable tool reply {}: {}", entry.id, failure->reason());
          continue;
        }
        auto& reply = std::get<bus::tool_reply>(decoded);
        const auto it = waiters.find(reply.request_id);
        if (it == waiters.end()) {
          if (late != nullptr) late->inc();
          continue;
        }
        if (reply.ok) it->second->output.emplace(tool_output{std::move(reply.result), std::move(reply.media)});
        else it->second->output.emplace(failed(reply.error));
        it->second->timer.cancel();
        waiters.erase(it);
      }
      if (!r->is_nil()) {
        // Trim what was read; replies are consumed once.
        co_await commands.command("XTRIM", stream, "MINID", "~", last_id);
      }
    }
    reader_done = true;
  }

  redis::connection& commands;
  bus::event_bus& bus;
  std::string stream;
  std::unique_ptr<redis::connection> blocking;
  std::map<std::string, std::shared_ptr<waiter>> waiters;
  log::logger log;
  metrics::counter* late = nullptr;
  metrics::counter* timeouts = nullptr;
  bool running = false;
  bool reader_done = true;
};

remote_tool_client::remote_tool_client(redis::connection& commands, redis::connection_settings blocking,
                                       bus::event_bus& bus, std::string worker_id, metrics::registry* metrics)
    : impl_(std::make_shared<impl>(commands, std::move(blocking), bus, std::move(worker_id), metrics)) {}

remote_tool_client::~remote_tool_client() {
  impl_->running = false;
  impl_->blocking->stop();
}

asio::awaitable<void> remote_tool_client::start() {
  impl_->running = true;
  impl_->reader_done = false;
  impl_->blocking->start();
  spawn(impl_->commands.get_executor(), impl_->read_loop(), impl_->log.component());
  co_return;
}

asio::awaitable<void> remote_tool_client::stop(std::chrono::milliseconds) {
  impl_->running = false;
  impl_->blocking->stop();
  for (auto& [id, w] : impl_->waiters) w->timer.cancel();  // they answer "shutting down"
  impl_->waiters.clear();
  co_await impl_->commands.command("DEL", impl_->stream);
}

const std::string& remote_tool_client::reply_stream() const { return impl_->stream; }
std::size_t remote_tool_client::waiting() const { return impl_->waiters.size(); }

asio::awaitable<tool_output> remote_tool_client::call(const std::string& tool_name, const std::string& args_json,
                                                     const call_context& ctx, std::chrono::milliseconds deadline) {
  auto self = impl_;
  if (!self->running) co_return failed("the worker is shutting down");
  bus::tool_request req;
  req.request_id = bus::random_hex_id();
  req.reply_stream = self->stream;
  req.tool_name = tool_name;
  req.tool_args_json = args_json.empty() ? "{}" : args_json;
  req.tool_ctx = ctx.to_map();
  req.deadline = unix_now() + std::chrono::duration<double>(deadline).count();
  req.trace_id = ctx.trace_id;

  auto w = std::make_shared<impl::waiter>(co_await asio::this_coro::executor);
  w->timer.expires_after(deadline);
  self->waiters.emplace(req.request_id, w);
  auto published = co_await self->bus.publish(self->bus.names().tools_stream, bus::encode(req), req.trace_id, "");
  if (!published) {
    self->waiters.erase(req.request_id);
    co_return failed("the tool request was not published: " + published.error().message());
  }
  boost::system::error_code ec;
  co_await w->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (w->output) co_return std::move(*w->output);
  self->waiters.erase(req.request_id);
  if (!self->running) co_return failed("the worker is shutting down");
  if (self->timeouts != nullptr) self->timeouts->inc();
  co_return failed(fmt::format("the tools service did not answer '{}' within {} ms", tool_name, deadline.count()));
}

// ---- tools side -------------------------------------------------------------------------------

struct tool_service::impl {
  impl(redis::connection& c, bus::event_bus& b, const registry& r, tool_service_settings s)
      : commands(c), bus(b), tools(r), settings(std::move(s)), log("tool-service") {}

  asio::awaitable<bus::outcome> handle(const bus::stream_entry& entry) {
    auto decoded = bus::decode_tool_request(entry.field("data"));
    if (auto* failure = std::get_if<bus::decode_failure>(&decoded)) co_return bus::outcome::dead_letter(failure->reason());
    const auto& req = std::get<bus::tool_request>(decoded);
    bus::tool_reply reply;
    reply.request_id = req.request_id;
    reply.trace_id = req.trace_id;
    const double remaining = req.deadline - unix_now();
    if (remaining <= 0) {
      reply.error = "deadline exceeded before the tool ran";
    } else {
      auto ctx = call_context::from_map(req.tool_ctx);
      ctx.trace_id = req.trace_id;
      auto out = co_await tools.execute(req.tool_name, req.tool_args_json, std::move(ctx));
      reply.ok = true;  // a tool's own failure is its "error: ..." result text
      reply.result = std::move(out.text);
      reply.media = std::move(out.media);
    }
    redis::request write;
    write.push("XADD", req.reply_stream, "MAXLEN", "~", settings.reply_maxlen, "*", "data", bus::encode(reply),
               "trace_id", req.trace_id);
    write.push("EXPIRE", req.reply_stream, settings.reply_ttl.count());
    auto r = co_await commands.exec(std::move(write));
    if (!r) co_return bus::outcome::retry("tool reply not written: " + r.error().message());
    co_return bus::outcome::ack();
  }

  redis::connection& commands;
  bus::event_bus& bus;
  const registry& tools;
  tool_service_settings settings;
  log::logger log;
  std::unique_ptr<bus::stream_consumer> consumer;
};

tool_service::tool_service(redis::connection& commands, const redis::connection_settings& blocking,
                           bus::event_bus& bus, const registry& tools, const std::string& consumer_name,
                           tool_service_settings settings, metrics::registry* metrics)
    : impl_(std::make_shared<impl>(commands, bus, tools, std::move(settings))) {
  auto& c = impl_->settings.consumer;
  if (c.stream.empty()) c.stream = bus.names().tools_stream;
  if (c.group.empty()) c.group = bus.names().tools_group;
  if (c.consumer.empty()) c.consumer = consumer_name;
  auto* self = impl_.get();
  impl_->consumer = std::make_unique<bus::stream_consumer>(
      commands, blocking, c,
      [self](const bus::stream_entry& e, const bus::delivery&) -> asio::awaitable<bus::outcome> {
        co_return co_await self->handle(e);
      },
      metrics);
}

tool_service::~tool_service() = default;

asio::awaitable<void> tool_service::start() { co_await impl_->consumer->start(); }
asio::awaitable<void> tool_service::stop(std::chrono::milliseconds deadline) { co_await impl_->consumer->stop(deadline); }
bus::stream_consumer& tool_service::engine() { return *impl_->consumer; }

}  // namespace stargazer::tools
