#include "stargazer/worker/message_processor.hpp"

#include "stargazer/bus/lock.hpp"
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
#include <unordered_set>

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

// What one turn's model calls used, summed over triage and every tool round (the usage
// accounting's numbers).
struct turn_cost {
  platform::token_usage tokens;
  int model_calls = 0;

  void add(const llm::outcome& out) {
    ++model_calls;
    if (const auto* c = std::get_if<llm::completion>(&out)) {
      tokens.prompt_tokens += c->usage.prompt_tokens;
      tokens.completion_tokens += c->usage.completion_tokens;
    }
  }
};

}  // namespace

struct message_processor::impl {
  impl(platform::message_cache& c, std::shared_ptr<llm::client> m, processor_settings s, tools::tool_runner* t,
       metrics::registry* reg, channel_state* ch, platform::quotas* q)
      : cache(c),
        model(std::move(m)),
        settings(std::make_shared<const processor_settings>(std::move(s))),
        tools(t),
        channels(ch),
        quotas(q),
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
      commands = turns("command");
      held_back = turns("rate_limited");
      tool_calls = &reg->make_counter("stargazer_tool_calls_total", "Tool calls the model asked for");
      turn_seconds = &reg->make_histogram("stargazer_turn_seconds", "Addressed turns, receipt to reply sent");
      const auto decisions = [&](const char* decision) -> metrics::counter* {
        return &reg->make_counter("stargazer_triage_decisions_total",
                                  "Triage calls for messages not addressed to the bot, by decision",
                                  {{"decision", decision}});
      };
      triage_yes = decisions("yes");
      triage_no = decisions("no");
      triage_error = decisions("error");
      backfilled = &reg->make_counter("stargazer_backfilled_messages_total",
                                      "Messages of the platforms' history stored when a channel was first seen");
    }
  }

  static void bump(metrics::counter* c, std::uint64_t n = 1) {
    if (c != nullptr) c->inc(n);
  }

  static double now_unix() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  }

  // `m` by value: the sender's linked identity is filled in once read.
  asio::awaitable<bus::outcome> handle(incoming_message m, platform::platform_adapter& adapter) {
    const auto started = std::chrono::steady_clock::now();
    const auto s = settings;  // this turn keeps the settings and model it started with
    const auto llm_client = model;

    if (channels != nullptr) co_await backfill_if_new(m, adapter, *s);
    const platform::cached_message received{m.message_id, m.user_id,     m.user_name, m.text + describe_attachments(m.attachments),
                                            m.unix_time(), false, m.reply_to_id};
    if (!m.cached) {
      if (auto ec = co_await cache.store(m.platform, m.channel_id, received)) {
        bump(retried);
        co_return bus::outcome::retry("message cache: " + ec.message());
      }
    }

    channel_gate gate;
    if (channels != nullptr) {
      if (const auto command = parse_chat_command(m.text, s->command_prefix, s->bot_name))
        co_return co_await run_command(m, adapter, *s, *command);
      // A producer that resolved the sender's identity already is trusted.
      const std::string sender = m.unified_user_id ? std::string() : m.user_id;
      auto read = co_await channels->read_for_turn(m.platform, m.channel_id, sender);
      if (!read) {
        bump(retried);
        co_return bus::outcome::retry("channel state: " + read.error().message());
      }
      gate = read->gate;
      if (!read->sender_unified_id.empty()) co_await name_the_person(m, read->sender_unified_id);
    }

    // Unaddressed messages are stored for context; the channel's policy decides whether
    // one is answered (unprompted).
    const bool unprompted = !is_for_bot(m);
    const auto step =
        unprompted ? step_for_unaddressed(s->replies.for_platform(m.platform), gate) : unaddressed_step::answer;
    if (step == unaddressed_step::keep_silent) {
      bump(unaddressed);
      co_return bus::outcome::ack();
    }

    // The model is about to be called (triage or the reply): the quotas first.
    if (quota_applies(m, *s)) {
      auto held = co_await hold_back_over_quota(m, adapter, *s, unprompted);
      if (held) co_return std::move(*held);
    }

    turn_cost cost;
    auto outcome = co_await model_turn(m, adapter, *s, *llm_client, unprompted, step, gate, cost, started);
    if (cost.model_calls > 0) co_await account(m, *s, cost);
    co_return outcome;
  }

  // The model's part of a turn: triage when the policy asks for it, the conversation with
  // its tool rounds, and the reply (or the apology). `cost` collects what the calls used.
  asio::awaitable<bus::outcome> model_turn(const incoming_message& m, platform::platform_adapter& adapter,
                                           const processor_settings& s, llm::client& llm_client, bool unprompted,
                                           unaddressed_step step, const channel_gate& gate, turn_cost& cost,
                                           std::chrono::steady_clock::time_point started) {
    const log::field trace{"trace_id", m.trace_id};
    std::optional<std::vector<platform::cached_message>> history;
    if (step == unaddressed_step::ask_triage) {
      history = co_await recent_history(m, s, gate.forgotten_before);
      const bool speak = co_await triage(m, s, llm_client, *history, cost);
      if (!speak) {
        bump(unaddressed);
        co_return bus::outcome::ack();
      }
    }

    if (!history) history = co_await recent_history(m, s, gate.forgotten_before);
    llm::request req = build_request(m, adapter, s, *history, true);
    const auto executor = co_await asio::this_coro::executor;
    delayed_typing typing(executor, adapter, m.channel_id, s.typing_delay);
    co_await typing.begin();

    std::optional<std::string> answer;  // nullopt: the model failed
    std::exception_ptr thrown;
    try {
      answer = co_await converse(m, adapter, s, llm_client, req, cost);
    } catch (...) {
      thrown = std::current_exception();
    }
    co_await typing.end();
    if (thrown) std::rethrow_exception(thrown);

    const bool failed = !answer;
    if (failed) bump(model_failed);
    if (failed && unprompted) co_return bus::outcome::ack();  // nobody asked: no apology
    std::string reply = failed ? std::string(apology_text) : std::move(*answer);
    if (!failed && reply.empty()) {
      log.log(log::level::warn, {trace}, "the model gave an empty reply for {}:{}", m.platform, m.channel_id);
      bump(replied);
      co_return bus::outcome::ack();
    }
    platform::send_context ctx;
    ctx.trace_id = m.trace_id;
    ctx.response_nonce = m.response_nonce;
    ctx.completes_turn = true;  // nothing follows the reply
    // What the channel's next turn must see is written after the send: an unprompted
    // reply's cool-down, and with a token budget the turn's usage (the budget reads it).
    ctx.state_follows = unprompted || s.quotas.budgets_tokens();
    auto sent = co_await adapter.send(m.channel_id, reply, ctx);
    if (!sent) {
      bump(retried);
      co_return bus::outcome::retry("reply not published: " + sent.error().message());
    }
    if (!failed) bump(replied);
    if (turn_seconds != nullptr)
      turn_seconds->observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    if (channels != nullptr) co_await after_reply(m, s, unprompted);
    co_return bus::outcome::ack();
  }

  // One person, several accounts (`stargazer identity link`): the prompt names them as one.
  // A Redis failure leaves the message as it came (the turn is not worth failing for a name).
  asio::awaitable<void> name_the_person(incoming_message& m, const std::string& unified_id) {
    auto who = co_await channels->person(unified_id);
    if (!who) {
      log.warn("identity of {}:{} not resolved: {}", m.platform, m.user_id, who.error().message());
      co_return;
    }
    if (!*who) co_return;  // unlinked since
    m.unified_user_id = (*who)->unified_id;
    m.user_aliases = platform::aliases_of(**who, m.platform, m.user_id);
  }

  // Whether this turn is held to the quotas here: some are on, and the platform's gateway
  // did not check them already.
  bool quota_applies(const incoming_message& m, const processor_settings& s) const {
    if (quotas == nullptr || !s.quotas.enabled()) return false;
    const auto& at_gateway = s.quotas_checked_by_gateway;
    return std::find(at_gateway.begin(), at_gateway.end(), m.platform) == at_gateway.end();
  }

  // nullopt: the turn may call the model. Otherwise the outcome of a turn a quota holds
  // back: the message is in the cache already (nothing is lost, later turns see it); an
  // addressed one gets the polite notice, once per window, then nothing. Acknowledged, not
  // retried: a retry would be held back again. A Redis failure is retried, as any other.
  asio::awaitable<std::optional<bus::outcome>> hold_back_over_quota(const incoming_message& m,
                                                                    platform::platform_adapter& adapter,
                                                                    const processor_settings& s, bool unprompted) {
    const platform::quota_subject who{m.platform, m.channel_id, m.user_id};
    const bool notice = !unprompted;  // nobody asked an unprompted turn: it is held back silently
    auto decision = co_await quotas->admit(s.quotas, who, notice);
    if (!decision) {
      bump(retried);
      co_return bus::outcome::retry("quota check: " + decision.error().message());
    }
    if (decision->admitted) co_return std::nullopt;
    bump(held_back);
    const log::field trace{"trace_id", m.trace_id};
    log.log(log::level::info, {trace}, "{}:{}: turn of {} held back by {} (admits again in {} ms){}", m.platform,
            m.channel_id, m.user_id, platform::to_string(decision->limit), decision->retry_after.count(),
            decision->notify ? ", notice sent" : "");
    if (!decision->notify) co_return bus::outcome::ack();
    platform::send_context ctx;
    ctx.trace_id = m.trace_id;
    ctx.response_nonce = m.response_nonce;
    ctx.completes_turn = true;
    const auto text = quota_notice_text(decision->limit, decision->retry_after);
    auto sent = co_await adapter.send(m.channel_id, text, ctx);
    // Not retried: the notice mark is set, so a retry would be silent anyway.
    if (!sent)
      log.log(log::level::warn, {trace}, "quota notice for {}:{} not published: {}", m.platform, m.channel_id,
              sent.error().message());
    co_return bus::outcome::ack();
  }

  // The turn's tokens on the channel's usage of the day (at once when a budget reads them
  // before the next turn). A failure costs the accounting of one turn, never the turn.
  asio::awaitable<void> account(const incoming_message& m, const processor_settings& s, const turn_cost& cost) {
    if (quotas == nullptr) co_return;
    if (auto ec = co_await quotas->record(m.platform, m.channel_id, cost.tokens, s.quotas.budgets_tokens()))
      log.log(log::level::warn, {{"trace_id", m.trace_id}}, "usage of {}:{} not recorded: {}", m.platform,
              m.channel_id, ec.message());
  }

  // The reply is out: an unprompted one starts the channel's cool-down, and the heartbeat
  // learns the bot speaks here. Failures cost only those, never the sent reply.
  asio::awaitable<void> after_reply(const incoming_message& m, const processor_settings& s, bool unprompted) {
    if (unprompted) {
      if (auto ec = co_await channels->start_cooldown(m.platform, m.channel_id, s.unprompted_cooldown))
        log.warn("cool-down of {}:{} not started: {}", m.platform, m.channel_id, ec.message());
    }
    if (platform_is_local(m.platform)) co_return;
    const double now = now_unix();
    if (auto ec = co_await channels->note_bot_spoke(m.platform, m.channel_id, now))
      log.warn("heartbeat index not updated for {}:{}: {}", m.platform, m.channel_id, ec.message());
  }

  // Should the bot answer `m`, which is not addressed to it? A failed call says no.
  asio::awaitable<bool> triage(const incoming_message& m, const processor_settings& s, llm::client& llm_client,
                               const std::vector<platform::cached_message>& history, turn_cost& cost) {
    const auto& model_name = s.triage_model.empty() ? s.model : s.triage_model;
    auto req = triage_request(s.bot_name, history, m, model_name, s.triage_max_tokens);
    auto out = co_await llm_client.complete(req);
    cost.add(out);
    const log::field trace{"trace_id", m.trace_id};
    if (const auto* f = std::get_if<llm::failure>(&out)) {
      bump(triage_error);
      log.log(log::level::warn, {trace}, "triage call failed for {}:{} ({}): {}", m.platform, m.channel_id,
              llm::to_string(f->what), f->detail);
      co_return false;
    }
    const auto& answer = std::get<llm::completion>(out).content;
    const bool yes = triage_says_yes(answer);
    bump(yes ? triage_yes : triage_no);
    log.log(log::level::debug, {trace}, "triage for {}:{}: {}", m.platform, m.channel_id, yes ? "yes" : "no");
    co_return yes;
  }

  // A chat command: its effect on the channel's state, then its reply.
  asio::awaitable<bus::outcome> run_command(const incoming_message& m, platform::platform_adapter& adapter,
                                            const processor_settings& s, const chat_command& command) {
    auto gate = co_await channels->gate(m.platform, m.channel_id);
    if (!gate) {
      bump(retried);
      co_return bus::outcome::retry("channel state: " + gate.error().message());
    }
    const auto current = gate->mode.value_or(s.replies.for_platform(m.platform));
    const bool privileged = is_privileged(m, s.privileges);
    const auto effect = plan_command(command, privileged, s.command_prefix, current);
    std::error_code ec;
    if (effect.set_mode) ec = co_await channels->set_mode(m.platform, m.channel_id, *effect.set_mode);
    if (!ec && effect.quiet_minutes) {
      const std::chrono::seconds length(static_cast<std::int64_t>(*effect.quiet_minutes) * 60);
      const double now = now_unix();
      ec = co_await channels->set_quiet(m.platform, m.channel_id, length, now);
    }
    const double sent_at = m.unix_time();
    if (!ec && effect.forget) ec = co_await channels->forget(m.platform, m.channel_id, sent_at);
    if (ec) {
      bump(retried);
      co_return bus::outcome::retry("channel state not written: " + ec.message());
    }
    if (effect.set_mode || effect.quiet_minutes || effect.forget)
      log.log(log::level::info, {{"trace_id", m.trace_id}}, "{}:{}: {}{} {} by {} ({})", m.platform, m.channel_id,
              s.command_prefix, to_string(command.name), command.argument, m.user_id, m.user_name);
    platform::send_context ctx;
    ctx.trace_id = m.trace_id;
    ctx.response_nonce = m.response_nonce;
    ctx.completes_turn = true;
    auto sent = co_await adapter.send(m.channel_id, effect.reply, ctx);
    if (!sent) {
      bump(retried);
      co_return bus::outcome::retry("command reply not published: " + sent.error().message());
    }
    bump(commands);
    co_return bus::outcome::ack();
  }

  // The first time this worker sees a channel of a platform with history of its own and
  // the cache holds nothing of it, the platform's recent messages are stored, once per
  // channel across workers (the marker). Never fails the turn: a missing history costs
  // context only.
  asio::awaitable<void> backfill_if_new(const incoming_message& m, platform::platform_adapter& adapter,
                                        const processor_settings& s) {
    if (platform_is_local(m.platform) || s.history_messages == 0) co_return;
    auto channel = m.platform + ":" + m.channel_id;
    if (seen_channels.contains(channel)) co_return;
    auto count = co_await channels->cached_messages(m.platform, m.channel_id);
    if (!count) co_return;  // asked again with the channel's next message
    if (seen_channels.size() >= max_seen_channels) seen_channels.clear();
    seen_channels.insert(std::move(channel));
    if (*count > (m.cached ? 1 : 0)) co_return;
    const double now = now_unix();
    auto claimed = co_await channels->claim_backfill(m.platform, m.channel_id, s.backfill_marker_ttl, now);
    if (!claimed || !*claimed) co_return;  // another worker took it (or Redis failed: context only)
    const int limit = static_cast<int>(std::min<std::size_t>(s.history_messages, 1000));
    const auto history = co_await adapter.fetch_history(m.channel_id, limit);
    std::uint64_t stored = 0;
    for (const auto& h : history) {
      if (h.message_id.empty() || h.message_id == m.message_id) continue;
      const platform::cached_message old{h.message_id, h.user_id, h.user_name, h.text, h.timestamp, h.is_bot,
                                         h.reply_to_id};
      if (auto ec = co_await cache.store(m.platform, m.channel_id, old)) {
        log.warn("backfill of {}:{} stopped: {}", m.platform, m.channel_id, ec.message());
        break;
      }
      ++stored;
    }
    bump(backfilled, stored);
    log.log(log::level::info, {{"trace_id", m.trace_id}}, "backfilled {} messages of {}:{}", stored, m.platform,
            m.channel_id);
  }

  asio::awaitable<heartbeat_outcome> heartbeat(const channel_ref& ch, platform::platform_adapter& adapter,
                                               const std::string& message_key) {
    const auto s = settings;
    const auto llm_client = model;
    incoming_message m;
    m.platform = ch.platform;
    m.channel_id = ch.channel_id;
    m.message_id = "heartbeat";
    m.trace_id = bus::random_hex_id().substr(0, 16);
    m.timestamp = std::chrono::system_clock::now();
    channel_gate gate;
    if (channels != nullptr) {
      auto read = co_await channels->gate(m.platform, m.channel_id);
      if (read) gate = *read;
    }
    // A heartbeat is a turn of the channel: held to its rate and budget (silently, nobody
    // asked for it) and counted in its usage.
    if (quota_applies(m, *s)) {
      const platform::quota_subject channel_only{m.platform, m.channel_id, {}};
      auto decision = co_await quotas->admit(s->quotas, channel_only, false);
      if (!decision || !decision->admitted) co_return heartbeat_outcome::silent;
    }
    const auto history = co_await recent_history(m, *s, gate.forgotten_before);
    llm::request req = build_request(m, adapter, *s, history, false);
    req.tools.clear();
    req.kind = llm::request_kind::heartbeat;
    req.messages.push_back({llm::role::system, heartbeat_instruction(s->bot_name)});
    auto out = co_await llm_client->complete(req);
    turn_cost cost;
    cost.add(out);
    co_await account(m, *s, cost);
    if (const auto* f = std::get_if<llm::failure>(&out)) {
      log.warn("heartbeat model call failed for {}:{} ({}): {}", m.platform, m.channel_id,
               llm::to_string(f->what), f->detail);
      co_return heartbeat_outcome::model_failed;
    }
    const auto text = heartbeat_message(std::get<llm::completion>(out).content);
    if (!text) co_return heartbeat_outcome::silent;
    platform::send_context ctx;
    ctx.trace_id = m.trace_id;
    ctx.message_key = message_key;
    auto sent = co_await adapter.send(m.channel_id, *text, ctx);
    if (!sent) {
      log.warn("heartbeat message for {}:{} not published: {}", m.platform, m.channel_id,
               sent.error().message());
      co_return heartbeat_outcome::send_failed;
    }
    if (channels != nullptr) co_await after_reply(m, *s, false);
    co_return heartbeat_outcome::sent;
  }

  // The model calls of one turn: tool calls run and their results handed back, at most
  // max_tool_rounds rounds with tools and one without. nullopt when the model failed.
  asio::awaitable<std::optional<std::string>> converse(const incoming_message& m, platform::platform_adapter& adapter,
                                                       const processor_settings& s, llm::client& llm_client,
                                                       llm::request& req, turn_cost& cost) {
    const bool offers_tools = !req.tools.empty();
    const log::field trace{"trace_id", m.trace_id};
    for (int round = 0;; ++round) {
      if (round == s.max_tool_rounds) req.tools.clear();  // the last call must answer in words
      auto out = co_await llm_client.complete(req);
      cost.add(out);
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

  // The channel's messages before this one, oldest first, none from before the last
  // !forget (`forgotten_before`). A cache failure costs context, not the reply.
  asio::awaitable<std::vector<platform::cached_message>> recent_history(const incoming_message& m,
                                                                        const processor_settings& s,
                                                                        double forgotten_before) {
    std::vector<platform::cached_message> out;
    if (s.history_messages == 0) co_return out;
    auto recent = co_await cache.recent(m.platform, m.channel_id, s.history_messages + 1);
    if (!recent) {
      log.log(log::level::warn, {{"trace_id", m.trace_id}}, "history unavailable: {}", recent.error().message());
      co_return out;
    }
    for (auto& c : *recent)
      if (c.message_id != m.message_id && c.timestamp > forgotten_before && out.size() < s.history_messages)
        out.push_back(std::move(c));
    std::reverse(out.begin(), out.end());
    co_return out;
  }

  // The system prompt and the history, then `m` itself when `with_message` (a heartbeat
  // has no message of its own).
  llm::request build_request(const incoming_message& m, platform::platform_adapter& adapter,
                             const processor_settings& s, const std::vector<platform::cached_message>& history,
                             bool with_message) const {
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
    if (with_message && !m.user_name.empty()) names.insert(sender_label(m));
    std::string participants, tool_names;
    for (const auto& n : names) participants += (participants.empty() ? "" : ", ") + n;
    for (const auto& t : req.tools) tool_names += (tool_names.empty() ? "" : ", ") + t.name;

    const std::map<std::string, std::string, std::less<>> variables{
        {"bot_name", s.bot_name},
        {"platform", m.platform},
        {"channel", m.channel_name.empty() ? m.channel_id : m.channel_name},
        {"participants", participants.empty() ? std::string("unknown") : participants},
        {"tools", tool_names.empty() ? std::string("none") : tool_names},
        {"extra", with_message ? render_extra(m.extra.fields) : std::string()},
        {"current_time", fmt::format("{:%Y-%m-%d %H:%M} UTC", fmt::gmtime(std::chrono::system_clock::to_time_t(
                                                                 std::chrono::system_clock::now())))}};
    req.messages.push_back(
        {llm::role::system, render_prompt(s.system_prompt.empty() ? default_system_prompt : s.system_prompt, variables)});
    for (const auto& h : history) {
      if (h.is_bot) req.messages.push_back({llm::role::assistant, h.text});
      else req.messages.push_back({llm::role::user, h.text, h.user_name});
    }
    if (with_message)
      req.messages.push_back({llm::role::user, m.text + describe_attachments(m.attachments), m.user_name});
    return req;
  }

  platform::message_cache& cache;
  std::shared_ptr<llm::client> model;
  std::shared_ptr<const processor_settings> settings;
  tools::tool_runner* tools;
  channel_state* channels;
  platform::quotas* quotas;
  log::logger log;
  // Channels this worker has checked for backfill; forgotten wholesale when full (a
  // channel seen again costs one ZCARD).
  static constexpr std::size_t max_seen_channels = 100'000;
  std::unordered_set<std::string> seen_channels;
  metrics::counter* replied = nullptr;
  metrics::counter* unaddressed = nullptr;
  metrics::counter* model_failed = nullptr;
  metrics::counter* retried = nullptr;
  metrics::counter* commands = nullptr;
  metrics::counter* held_back = nullptr;
  metrics::counter* tool_calls = nullptr;
  metrics::counter* triage_yes = nullptr;
  metrics::counter* triage_no = nullptr;
  metrics::counter* triage_error = nullptr;
  metrics::counter* backfilled = nullptr;
  metrics::histogram* turn_seconds = nullptr;
};

message_processor::message_processor(platform::message_cache& cache, std::shared_ptr<llm::client> model,
                                     processor_settings settings, tools::tool_runner* tools,
                                     metrics::registry* metrics, channel_state* channels, platform::quotas* quotas)
    : impl_(std::make_shared<impl>(cache, std::move(model), std::move(settings), tools, metrics, channels, quotas)) {}

message_processor::~message_processor() = default;

void message_processor::reconfigure(processor_settings settings, std::shared_ptr<llm::client> model) {
  impl_->settings = std::make_shared<const processor_settings>(std::move(settings));
  if (model) impl_->model = std::move(model);
}

const processor_settings& message_processor::settings() const { return *impl_->settings; }
const llm::client& message_processor::model() const { return *impl_->model; }
std::shared_ptr<llm::client> message_processor::shared_model() const { return impl_->model; }

asio::awaitable<bus::outcome> message_processor::handle(const incoming_message& m,
                                                        platform::platform_adapter& adapter) {
  auto self = impl_;  // reconfigure() may run while this turn waits
  co_return co_await self->handle(m, adapter);
}

asio::awaitable<heartbeat_outcome> message_processor::heartbeat(const channel_ref& channel,
                                                                platform::platform_adapter& adapter,
                                                                const std::string& message_key) {
  auto self = impl_;
  co_return co_await self->heartbeat(channel, adapter, message_key);
}

}  // namespace stargazer::worker
