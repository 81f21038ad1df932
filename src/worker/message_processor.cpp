#include "stargazer/worker/message_processor.hpp"

#include "stargazer/core/spawn.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/worker/prompt.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/chrono.h>
#include <fmt/format.h>

#include <algorithm>
#include <exception>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

namespace stargazer::worker {

namespace asio = boost::asio;

tools::call_context tool_context_of(const incoming_message& m, platform::platform_adapter& adapter) {
  tools::call_context c;
  c.platform = m.platform;
  c.channel_id = m.channel_id;
  c.user_id = m.user_id;
  c.user_name = m.user_name;
  c.message_id = m.message_id;
  c.trace_id = m.trace_id;
  c.adapter = &adapter;
  return c;
}

namespace {

std::string describe_attachments(const std::vector<bus::attachment>& attachments) {
  std::string out;
  for (const auto& a : attachments)
    out += fmt::format("\n[attachment: {} ({}, {} bytes)]", a.filename.empty() ? "unnamed" : a.filename,
                       a.mimetype.empty() ? "unknown type" : a.mimetype, a.data.size());
  return out;
}

// The typing indicator of one turn, shown only once the turn has taken `delay`: most
// replies come sooner, and then no typing envelopes are published at all (two fewer
// ordered publishes and gateway deliveries per turn). end() must be awaited on every
// path: after it the adapter is never touched again.
class delayed_typing {
public:
  delayed_typing(asio::any_io_executor ex, platform::platform_adapter& adapter, std::string channel_id,
                 std::chrono::milliseconds delay)
      : state_(std::make_shared<state>(ex, adapter, std::move(channel_id), delay)) {}

  asio::awaitable<void> begin() {
    auto st = state_;
    if (st->delay.count() == 0) {
      st->shown = true;
      co_await st->adapter.start_typing(st->channel_id);
      co_return;
    }
    st->timer.expires_after(st->delay);
    spawn(st->timer.get_executor(), show_when_due(st), "typing");
  }

  asio::awaitable<void> end() {
    auto st = state_;
    st->ended = true;
    st->timer.cancel();
    while (st->starting) {  // a start in flight must land before its stop
      st->started.expires_at(std::chrono::steady_clock::time_point::max());
      boost::system::error_code ec;
      co_await st->started.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (st->shown) co_await st->adapter.stop_typing(st->channel_id);
  }

private:
  struct state {
    state(asio::any_io_executor ex, platform::platform_adapter& a, std::string c, std::chrono::milliseconds d)
        : adapter(a), channel_id(std::move(c)), delay(d), timer(ex), started(ex) {}
    platform::platform_adapter& adapter;
    std::string channel_id;
    std::chrono::milliseconds delay;
    asio::steady_timer timer;
    asio::steady_timer started;
    bool ended = false;
    bool shown = false;
    bool starting = false;
  };

  static asio::awaitable<void> show_when_due(std::shared_ptr<state> st) {
    boost::system::error_code ec;
    co_await st->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (st->ended) co_return;
    st->shown = true;
    st->starting = true;
    try {
      co_await st->adapter.start_typing(st->channel_id);
    } catch (...) {  // best effort: a lost typing start only costs the indicator
    }
    st->starting = false;
    st->started.cancel();
  }

  std::shared_ptr<state> state_;
};

}  // namespace

struct message_processor::impl {
  impl(platform::message_cache& c, std::shared_ptr<llm::client> m, processor_settings s, tools::tool_runner* t,
       metrics::registry* reg)
      : cache(c),
        model(std::move(m)),
        settings(std::make_shared<const processor_settings>(std::move(s))),
        tools(t),
        log("processor") {
    if (reg != nullptr) {
      const auto turns = [&](const char* outcome) -> metrics::counter* {
        return &reg->make_counter("stargazer_turns_total", "Turns handled by the message processor, by outcome",
                                  {{"outcome", outcome}});
      };
      replied = turns("replied");
      unaddressed = turns("unaddressed");
      model_failed = turns("model_failed");
      retried = turns("retried");
      tool_calls = &reg->make_counter("stargazer_tool_calls_total", "Tool calls the model asked for");
      turn_seconds = &reg->make_histogram("stargazer_turn_seconds", "Addressed turns, receipt to reply sent");
    }
  }

  static void bump(metrics::counter* c) {
    if (c != nullptr) c->inc();
  }

  asio::awaitable<bus::outcome> handle(const incoming_message& m, platform::platform_adapter& adapter) {
    const auto started = std::chrono::steady_clock::now();
    const auto s = settings;  // this turn keeps the settings and model it started with
    const auto llm_client = model;
    const log::field trace{"trace_id", m.trace_id};

    const platform::cached_message received{m.message_id, m.user_id,     m.user_name, m.text + describe_attachments(m.attachments),
                                            m.unix_time(), false, m.reply_to_id};
    if (!m.cached) {
      if (auto ec = co_await cache.store(m.platform, m.channel_id, received)) {
        bump(retried);
        co_return bus::outcome::retry("message cache: " + ec.message());
      }
    }
    if (!m.is_addressed) {
      bump(unaddressed);
      co_return bus::outcome::ack();  // stored for context, not answered
    }

    const auto history = co_await recent_history(m, *s);
    llm::request req = build_request(m, adapter, *s, history);
    const auto executor = co_await asio::this_coro::executor;
    delayed_typing typing(executor, adapter, m.channel_id, s->typing_delay);
    co_await typing.begin();

    std::optional<std::string> answer;  // nullopt: the model failed
    std::exception_ptr thrown;
    try {
      answer = co_await converse(m, adapter, *s, *llm_client, req);
    } catch (...) {
      thrown = std::current_exception();
    }
    co_await typing.end();
    if (thrown) std::rethrow_exception(thrown);

    const bool failed = !answer;
    std::string reply = failed ? std::string(apology_text) : std::move(*answer);
    if (failed) {
      bump(model_failed);
    } else if (reply.empty()) {
      log.log(log::level::warn, {trace}, "the model gave an empty reply for {}:{}", m.platform, m.channel_id);
      bump(replied);
      co_return bus::outcome::ack();
    }
    platform::send_context ctx;
    ctx.trace_id = m.trace_id;
    ctx.response_nonce = m.response_nonce;
    ctx.completes_turn = true;  // nothing follows the reply
    auto sent = co_await adapter.send(m.channel_id, reply, ctx);
    if (!sent) {
      bump(retried);
      co_return bus::outcome::retry("reply not published: " + sent.error().message());
    }
    if (!failed) bump(replied);
    if (turn_seconds != nullptr)
      turn_seconds->observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    co_return bus::outcome::ack();
  }

  // The model calls of one turn: tool calls run and their results handed back, at most
  // max_tool_rounds rounds with tools and one without. nullopt when the model failed.
  asio::awaitable<std::optional<std::string>> converse(const incoming_message& m, platform::platform_adapter& adapter,
                                                       const processor_settings& s, llm::client& llm_client,
                                                       llm::request& req) {
    const bool offers_tools = !req.tools.empty();
    const log::field trace{"trace_id", m.trace_id};
    for (int round = 0;; ++round) {
      if (round == s.max_tool_rounds) req.tools.clear();  // the last call must answer in words
      auto out = co_await llm_client.complete(req);
      if (const auto* f = std::get_if<llm::failure>(&out)) {
        log.log(log::level::error, {trace}, "model call failed for {}:{} ({}{}): {}", m.platform, m.channel_id,
                llm::to_string(f->what), f->http_status != 0 ? fmt::format(" {}", f->http_status) : std::string(),
                f->detail);
        co_return std::nullopt;
      }
      auto& c = std::get<llm::completion>(out);
      if (c.tool_calls.empty() || !offers_tools || tools == nullptr || req.tools.empty())
        co_return std::move(c.content);
      llm::message call{llm::role::assistant, c.content, {}, c.tool_calls, {}};
      req.messages.push_back(std::move(call));
      const auto ctx = tool_context_of(m, adapter);
      for (const auto& tc : c.tool_calls) {
        bump(tool_calls);
        log.log(log::level::debug, {trace}, "tool call {} ({})", tc.name, tc.id);
        auto result = co_await tools->run(tc, ctx);
        llm::message answer{llm::role::tool, std::move(result), {}, {}, tc.id};
        req.messages.push_back(std::move(answer));
      }
    }
  }

  // The channel's messages before this one, oldest first. A cache failure costs context,
  // not the reply.
  asio::awaitable<std::vector<platform::cached_message>> recent_history(const incoming_message& m,
                                                                        const processor_settings& s) {
    std::vector<platform::cached_message> out;
    if (s.history_messages == 0) co_return out;
    auto recent = co_await cache.recent(m.platform, m.channel_id, s.history_messages + 1);
    if (!recent) {
      log.log(log::level::warn, {{"trace_id", m.trace_id}}, "history unavailable: {}", recent.error().message());
      co_return out;
    }
    for (auto& c : *recent)
      if (c.message_id != m.message_id && out.size() < s.history_messages) out.push_back(std::move(c));
    std::reverse(out.begin(), out.end());
    co_return out;
  }

  llm::request build_request(const incoming_message& m, platform::platform_adapter& adapter,
                             const processor_settings& s,
                             const std::vector<platform::cached_message>& history) const {
    llm::request req;
    req.model = s.model;
    req.temperature = s.temperature;
    req.max_tokens = s.max_tokens;
    req.top_p = s.top_p;
    req.trace_id = m.trace_id;
    if (tools != nullptr) req.tools = tools->offered(tool_context_of(m, adapter));

    std::set<std::string> names;
    for (const auto& h : history)
      if (!h.is_bot && !h.user_name.empty()) names.insert(h.user_name);
    if (!m.user_name.empty()) names.insert(m.user_name);
    std::string participants, tool_names;
    for (const auto& n : names) participants += (participants.empty() ? "" : ", ") + n;
    for (const auto& t : req.tools) tool_names += (tool_names.empty() ? "" : ", ") + t.name;

    const std::map<std::string, std::string, std::less<>> variables{
        {"bot_name", s.bot_name},
        {"platform", m.platform},
        {"channel", m.channel_name.empty() ? m.channel_id : m.channel_name},
        {"participants", participants.empty() ? std::string("unknown") : participants},
        {"tools", tool_names.empty() ? std::string("none") : tool_names},
        {"current_time", fmt::format("{:%Y-%m-%d %H:%M} UTC", fmt::gmtime(std::chrono::system_clock::to_time_t(
                                                                 std::chrono::system_clock::now())))}};
    req.messages.push_back(
        {llm::role::system, render_prompt(s.system_prompt.empty() ? default_system_prompt : s.system_prompt, variables)});
    for (const auto& h : history) {
      if (h.is_bot) req.messages.push_back({llm::role::assistant, h.text});
      else req.messages.push_back({llm::role::user, h.text, h.user_name});
    }
    req.messages.push_back({llm::role::user, m.text + describe_attachments(m.attachments), m.user_name});
    return req;
  }

  platform::message_cache& cache;
  std::shared_ptr<llm::client> model;
  std::shared_ptr<const processor_settings> settings;
  tools::tool_runner* tools;
  log::logger log;
  metrics::counter* replied = nullptr;
  metrics::counter* unaddressed = nullptr;
  metrics::counter* model_failed = nullptr;
  metrics::counter* retried = nullptr;
  metrics::counter* tool_calls = nullptr;
  metrics::histogram* turn_seconds = nullptr;
};

message_processor::message_processor(platform::message_cache& cache, std::shared_ptr<llm::client> model,
                                     processor_settings settings, tools::tool_runner* tools, metrics::registry* metrics)
    : impl_(std::make_shared<impl>(cache, std::move(model), std::move(settings), tools, metrics)) {}

message_processor::~message_processor() = default;

void message_processor::reconfigure(processor_settings settings, std::shared_ptr<llm::client> model) {
  impl_->settings = std::make_shared<const processor_settings>(std::move(settings));
  if (model) impl_->model = std::move(model);
}

const processor_settings& message_processor::settings() const { return *impl_->settings; }
const llm::client& message_processor::model() const { return *impl_->model; }

asio::awaitable<bus::outcome> message_processor::handle(const incoming_message& m,
                                                        platform::platform_adapter& adapter) {
  auto self = impl_;  // reconfigure() may run while this turn waits
  co_return co_await self->handle(m, adapter);
}

}  // namespace stargazer::worker
