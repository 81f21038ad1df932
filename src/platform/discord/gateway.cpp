#include "stargazer/platform/discord/gateway.hpp"

#include "stargazer/core/json_value.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/spawn.hpp"
#include "stargazer/http/websocket_client.hpp"
#include "stargazer/platform/discord/gateway_protocol.hpp"

#include <boost/asio.hpp>

#include <deque>
#include <random>

namespace stargazer::platform::discord {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;
using std::chrono::milliseconds;


struct shard::impl : std::enable_shared_from_this<impl> {
  impl(asio::any_io_executor e, shard_settings s, session_state initial, shard_callbacks c)
      : ex(e),
        settings(std::move(s)),
        session(std::move(initial)),
        callbacks(std::move(c)),
        log("discord:shard-" + std::to_string(settings.shard_id)),
        wake(e, clock_type::time_point::max()),
        rng(std::random_device{}()) {}

  asio::any_io_executor ex;
  shard_settings settings;
  session_state session;
  shard_callbacks callbacks;
  log::logger log;
  asio::steady_timer wake;  // backoff sleeps; cancelled by stop()
  std::mt19937 rng;

  std::unique_ptr<http::websocket_client> ws;
  std::uint64_t connection = 0;  // incremented per connection; heartbeat loops of older ones end
  bool stopping = false;
  bool is_connected = false;
  bool ack_received = true;
  std::optional<std::string> fatal;
  std::deque<clock_type::time_point> commands_sent;  // in the last 60 s

  // How a connection ended, and what comes next.
  struct ending {
    bool was_ready = false;          // identified or resumed: the backoff starts over
    std::optional<milliseconds> wait;  // a fixed wait (op 9 false), else the backoff
  };

  milliseconds jittered(milliseconds d) {
    std::uniform_int_distribution<long> dist(d.count() / 2, d.count());
    return milliseconds(dist(rng));
  }

  asio::awaitable<void> sleep(milliseconds d) {
    wake.expires_after(d);
    boost::system::error_code ec;
    co_await wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    milliseconds backoff = settings.backoff_min;
    while (!stopping && !fatal) {
      const auto end = co_await connect_once();
      if (stopping || fatal) break;
      if (end.was_ready) backoff = settings.backoff_min;
      const auto delay = end.wait ? *end.wait : jittered(backoff);
      if (!end.wait && !end.was_ready) backoff = std::min(backoff * 2, settings.backoff_max);
      log.debug("reconnecting in {} ms", delay.count());
      co_await sleep(delay);
    }
    log.info("stopped{}", fatal ? ": " + *fatal : std::string());
  }

  // Sends a command unless that would pass the per-connection budget (heartbeats always go:
  // the budget leaves them room).
  bool send(std::string json, bool heartbeat = false) {
    if (!ws) return false;
    const auto now = clock_type::now();
    while (!commands_sent.empty() && now - commands_sent.front() > std::chrono::seconds(60)) commands_sent.pop_front();
    if (!heartbeat && static_cast<int>(commands_sent.size()) >= settings.commands_per_minute) {
      log.warn("gateway command dropped: {} commands in the last 60 s", commands_sent.size());
      return false;
    }
    commands_sent.push_back(now);
    ws->send(std::move(json));
    return true;
  }

  asio::awaitable<void> heartbeat_loop(std::uint64_t conn, milliseconds interval) {
    auto self = shared_from_this();
    asio::steady_timer timer(ex);
    std::uniform_real_distribution<double> first(0.0, 1.0);
    timer.expires_after(milliseconds(static_cast<long>(static_cast<double>(interval.count()) * first(rng))));
    for (;;) {
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (conn != connection || stopping || !ws) co_return;
      if (!ack_received) {
        log.warn("no heartbeat ACK since the last beat: a zombie connection; reconnecting to resume");
        ws->abort();
        co_return;
      }
      ack_received = false;
      send(heartbeat_command(session.seq > 0 ? std::optional<std::int64_t>(session.seq) : std::nullopt), true);
      timer.expires_after(interval);
    }
  }

  asio::awaitable<ending> connect_once() {
    ending end;
    const bool resuming = session.resumable();
    const auto url = gateway_connect_url(resuming ? session.resume_url : settings.gateway_url, settings.compress);
    http::websocket_client_settings ws_settings;
    ws_settings.connect_timeout = settings.connect_timeout;
    ws_settings.max_message_bytes = settings.max_message_bytes;
    auto connected = co_await http::websocket_client::connect(ex, url, ws_settings);
    if (!connected) {
      log.warn("cannot connect to {}: {}", url.substr(0, url.find('?')), connected.error().message());
      co_return end;
    }
    ws = std::move(*connected);
    const auto conn = ++connection;
    ack_received = true;
    commands_sent.clear();
    zlib_stream inflater(settings.max_message_bytes);

    while (!stopping) {
      auto message = co_await ws->read();
      if (!message) break;
      std::string text;
      if (settings.compress && message->binary) {
        auto r = inflater.feed(message->data);
        if (std::holds_alternative<zlib_stream::incomplete>(r)) continue;
        if (auto* f = std::get_if<zlib_stream::failure>(&r)) {
          log.warn("dropping the connection: {}", f->reason);
          ws->abort();
          continue;  // the read fails next
        }
        text = std::move(std::get<std::string>(r));
      } else {
        text = std::move(message->data);
      }
      auto decoded = parse_payload(text, settings.max_message_bytes);
      if (auto* error = std::get_if<std::string>(&decoded)) {
        log.warn("ignoring a gateway payload: {}", *error);
        continue;
      }
      const auto& p = std::get<payload>(decoded);
      switch (static_cast<opcode>(p.op)) {
        case opcode::hello: {
          auto d = json::parse_object(p.data_json);
          long interval = 0;
          if (auto* doc = std::get_if<rapidjson::Document>(&d); doc && doc->HasMember("heartbeat_interval") &&
                                                                 (*doc)["heartbeat_interval"].IsNumber())
            interval = static_cast<long>((*doc)["heartbeat_interval"].GetDouble());
          if (interval <= 0) {
            log.warn("Hello without a heartbeat interval; reconnecting");
            ws->abort();
            break;
          }
          spawn(ex, heartbeat_loop(conn, milliseconds(interval)), log.component());
          if (resuming) {
            send(resume_command(settings.token, session.session_id, session.seq));
          } else {
            if (callbacks.may_identify && !co_await callbacks.may_identify()) {
              log.info("identify postponed: another shard of this bot identified within 5 s");
              ws->close(4000);
              break;
            }
            if (stopping || conn != connection) break;
            send(identify_command(settings.token, settings.intents, settings.shard_id, settings.shard_count,
                                  settings.presence_text));
          }
          break;
        }
        case opcode::heartbeat_ack: ack_received = true; break;
        case opcode::heartbeat:
          send(heartbeat_command(session.seq > 0 ? std::optional<std::int64_t>(session.seq) : std::nullopt), true);
          break;
        case opcode::reconnect:
          log.info("the gateway asked to reconnect (op 7); resuming");
          end.wait = milliseconds(0);
          ws->close(4000);  // not 1000/1001: those end the session
          break;
        case opcode::invalid_session: {
          const bool can_resume = p.data_json == "true";
          log.info("invalid session (op 9, resumable: {})", can_resume);
          if (!can_resume) {
            session = session_state{};
            std::uniform_int_distribution<long> wait(1000, 5000);
            end.wait = milliseconds(wait(rng));
          } else {
            end.wait = milliseconds(0);
          }
          ws->close(4000);
          break;
        }
        case opcode::dispatch: {
          if (p.seq) session.seq = *p.seq;
          if (p.type == "READY") {
            auto d = json::parse_object(p.data_json);
            std::string user_id;
            if (auto* doc = std::get_if<rapidjson::Document>(&d)) {
              session.session_id = json::string_member(*doc, "session_id");
              session.resume_url = json::string_member(*doc, "resume_gateway_url");
              if (doc->HasMember("user")) user_id = json::string_member((*doc)["user"], "id");
            }
            end.was_ready = true;
            set_connected(true);
            log.info("ready (session {}, shard {}/{})", session.session_id, settings.shard_id, settings.shard_count);
            if (callbacks.on_ready) co_await callbacks.on_ready(session, user_id);
          } else if (p.type == "RESUMED") {
            end.was_ready = true;
            set_connected(true);
            log.info("resumed session {} at sequence {}", session.session_id, session.seq);
            if (callbacks.on_ready) co_await callbacks.on_ready(session, std::string());
          } else if (callbacks.on_dispatch) {
            co_await callbacks.on_dispatch(p.type, p.data_json, session);
          }
          break;
        }
        default: log.debug("ignoring gateway opcode {}", p.op); break;
      }
    }
    const int code = ws->close_code();
    ws.reset();
    ++connection;  // ends the heartbeat loop
    if (is_connected) set_connected(false);
    if (stopping) co_return end;
    switch (after_close(code)) {
      case close_action::fatal:
        fatal = describe_close(code);
        log.error("the gateway closed the connection: {}; this shard stops", *fatal);
        if (callbacks.on_fatal) callbacks.on_fatal(*fatal);
        break;
      case close_action::reidentify:
        log.info("connection closed: {}; identifying anew", describe_close(code));
        session = session_state{};
        break;
      case close_action::resume:
        log.info("connection closed: {}; resuming", describe_close(code));
        break;
    }
    co_return end;
  }

  void set_connected(bool up) {
    is_connected = up;
    if (callbacks.on_connected) callbacks.on_connected(up);
  }
};

shard::shard(asio::any_io_executor ex, shard_settings settings, session_state initial, shard_callbacks callbacks)
    : impl_(std::make_shared<impl>(ex, std::move(settings), std::move(initial), std::move(callbacks))) {}

shard::~shard() { stop(); }

void shard::start() { spawn(impl_->ex, impl_->run(), impl_->log.component()); }

void shard::stop() {
  impl_->stopping = true;
  impl_->wake.cancel();
  if (impl_->ws) impl_->ws->close(4000);
}

bool shard::send_command(std::string json) { return impl_->is_connected && impl_->send(std::move(json)); }
bool shard::connected() const { return impl_->is_connected; }
const session_state& shard::session() const { return impl_->session; }
std::optional<std::string> shard::fatal_error() const { return impl_->fatal; }
void shard::drop_connection() {
  if (impl_->ws) impl_->ws->abort();
}

}  // namespace stargazer::platform::discord
