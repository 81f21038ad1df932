// MCP's Streamable HTTP transport (specification 2025-11-25, "Transports"): every message
// is a POST to the endpoint; a request is answered with one JSON message or an SSE stream
// that ends with its answer (and may carry notifications and server requests before it);
// notifications and answers get 202. The session id the initialize answer sets is sent
// with every later request, with MCP-Protocol-Version; a 404 on it means the session is
// gone and the client starts over. A GET stream carries what the server sends on its own
// (tools/list_changed); a server without one answers 405.

#include "stargazer/tools/mcp/protocol.hpp"
#include "stargazer/tools/mcp/transport.hpp"

#include "stargazer/core/error.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/spawn.hpp"
#include "stargazer/core/strings.hpp"
#include "stargazer/http/client.hpp"
#include "stargazer/http/sse.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <algorithm>

namespace stargazer::tools::mcp {

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

// How long a POST's answer may take in all: the client's per-call deadline ends the wait
// for a tool first; this only bounds a connection nobody waits on any more.
constexpr auto post_response_limit = 10min;

class http_transport final : public transport {
public:
  http_transport(asio::any_io_executor ex, http_settings settings)
      : state_(std::make_shared<state>(std::move(ex), std::move(settings))) {}

  ~http_transport() override {
    state_->closed = true;
    state_->pause.cancel();
    if (state_->posts) state_->posts->abort_streams();
    if (state_->listener) state_->listener->abort_streams();
  }

  asio::awaitable<std::error_code> open(transport_handlers handlers) override {
    auto s = state_;
    if (s->posts) co_return make_error_code(std::errc::already_connected);
    std::string why;
    auto origin = http::parse_base_url(s->settings.url, &why);
    if (!origin) {
      s->log.error("--mcp-servers: '{}': {}", s->settings.url, why);
      co_return make_error_code(std::errc::invalid_argument);
    }
    s->target = origin->path_prefix.empty() ? "/" : "";
    http::client_settings post_settings;
    post_settings.connect_timeout = s->settings.connect_timeout;
    post_settings.response_timeout = post_response_limit;
    post_settings.max_response_bytes = s->settings.max_message_bytes;
    post_settings.user_agent = "stargazer-mcp";
    http::client_settings listen_settings = post_settings;
    listen_settings.response_timeout = 5min;  // the longest silence on the GET stream
    listen_settings.max_idle_connections = 0;
    try {
      s->posts = std::make_unique<http::client>(s->ex, *origin, post_settings);
      s->listener = std::make_unique<http::client>(s->ex, *origin, listen_settings);
    } catch (const std::exception& e) {
      s->log.error("cannot prepare the HTTP client for {}: {}", s->settings.url, e.what());
      co_return make_error_code(std::errc::invalid_argument);
    }
    s->handlers = std::move(handlers);
    co_return std::error_code{};
  }

  asio::awaitable<std::error_code> send(std::string text) override {
    auto s = state_;
    if (s->closed || !s->posts) co_return make_error_code(errc::not_connected);
    auto req = s->make_request(http::method::post);
    req.headers.emplace_back("content-type", "application/json");
    req.headers.emplace_back("accept", "application/json, text/event-stream");
    req.body = text;

    bool event_stream = false;
    bool too_large = false;
    std::string json_body;
    http::sse_parser events(s->settings.max_message_bytes);
    http::client::stream_handler handler;
    handler.on_head = [&](const http::response& head) {
      if (auto id = head.header("mcp-session-id"); id && s->session_id.empty()) s->session_id = std::string(*id);
      event_stream = head.content_type.find("text/event-stream") != std::string::npos;
      return true;
    };
    const auto id = request_id(text);
    bool answered_here = false;
    handler.on_body = [&, s](std::string_view piece) {
      if (s->closed) return false;
      if (event_stream) {
        for (auto& e : events.feed(piece)) {
          if (e.type != "message" || e.data.empty()) continue;
          if (!id.empty() && answers(e.data, id)) answered_here = true;
          s->deliver(std::move(e.data));
        }
        if (events.failed()) too_large = true;
        // The stream has served its request once the answer is in: a server that keeps
        // it open (with heartbeats) would otherwise hold a connection per call.
        return !events.failed() && !answered_here;
      }
      if (json_body.size() + piece.size() > s->settings.max_message_bytes) {
        too_large = true;
        return false;
      }
      json_body.append(piece);
      return true;
    };
    auto answered = co_await s->posts->stream(std::move(req), std::move(handler));
    if (s->closed) co_return make_error_code(errc::not_connected);
    if (!answered) {
      s->close_with(fmt::format("cannot reach {}: {}", s->settings.url, answered.error().message()));
      co_return answered.error();
    }
    if (too_large) {
      s->close_with(fmt::format("sent a message larger than {} bytes", s->settings.max_message_bytes));
      co_return make_error_code(errc::reply_too_large);
    }
    const auto& head = *answered;
    if (s->session_lost(head)) {
      s->close_with(fmt::format("lost its session (HTTP {}): it restarted or ended it", head.status));
      co_return make_error_code(errc::not_connected);
    }
    if (head.status >= 200 && head.status < 300) {
      if (!event_stream && !json_body.empty()) s->deliver(std::move(json_body));
      co_return std::error_code{};
    }
    // Any other status (401, 403, 406, 5xx): the request is answered here, naming the
    // status and the body (often a JSON-RPC error with a null id, which would reach nobody).
    if (!id.empty()) {
      if (answers(head.body, id)) s->deliver(std::string(head.body));
      else s->deliver(encode_error(id, -32000, fmt::format("HTTP {}: {}", head.status, utf8_prefix(head.body, 300))));
    }
    co_return std::error_code{};
  }

  void set_protocol_version(std::string version) override {
    state_->protocol_version = std::move(version);
    // The server may now talk on its own: listen on the GET stream.
    if (!state_->listening) {
      state_->listening = true;
      auto s = state_;
      spawn(s->ex, [s]() -> asio::awaitable<void> { co_await s->listen(); }, "mcp:" + s->settings.server_name);
    }
  }

  asio::awaitable<void> close(std::chrono::milliseconds grace) override {
    auto s = state_;
    if (s->closed) co_return;
    s->closed = true;
    s->handlers = {};
    s->pause.cancel();
    if (s->listener) s->listener->abort_streams();
    if (s->posts) s->posts->abort_streams();
    if (!s->session_id.empty()) {
      // Ends the session on the server (it may answer 405: sessions end by themselves then).
      http::client_settings settings;
      settings.connect_timeout = grace;
      settings.response_timeout = grace;
      settings.max_idle_connections = 0;
      if (auto origin = http::parse_base_url(s->settings.url)) {
        http::client ender(s->ex, *origin, settings);
        auto req = s->make_request(http::method::delete_);
        auto ended = co_await ender.send(std::move(req));
        (void)ended;
      }
    }
  }

  std::string describe() const override { return "http " + state_->settings.url; }

private:
  struct state : std::enable_shared_from_this<state> {
    state(asio::any_io_executor e, http_settings s)
        : ex(std::move(e)), settings(std::move(s)), log("mcp:" + settings.server_name), pause(ex) {}

    asio::any_io_executor ex;
    http_settings settings;
    log::logger log;
    std::unique_ptr<http::client> posts;
    std::unique_ptr<http::client> listener;
    transport_handlers handlers;
    std::string target;
    std::string session_id;
    std::string protocol_version;
    bool closed = false;
    bool listening = false;
    asio::steady_timer pause;

    http::request make_request(http::method verb) const {
      http::request req;
      req.verb = verb;
      req.target = target;
      for (const auto& [name, value] : settings.headers) req.headers.emplace_back(name, value);
      if (!session_id.empty()) req.headers.emplace_back("mcp-session-id", session_id);
      if (!protocol_version.empty()) req.headers.emplace_back("mcp-protocol-version", protocol_version);
      return req;
    }

    // The specification answers a request on a session the server no longer has with 404;
    // servers built on the TypeScript SDK's examples answer 400 naming the session.
    bool session_lost(const http::response& r) const {
      if (session_id.empty()) return false;
      if (r.status == 404) return true;
      if (r.status != 400) return false;
      return ascii_lower(std::string_view(r.body).substr(0, 500)).find("session") != std::string::npos;
    }

    void deliver(std::string text) {
      if (!closed && handlers.on_message) handlers.on_message(std::move(text));
    }

    void close_with(std::string why) {
      if (closed) return;
      closed = true;
      pause.cancel();
      if (listener) listener->abort_streams();
      auto done = std::move(handlers.on_closed);
      handlers = {};
      if (done) done(std::move(why));
    }

    // The GET stream, opened again when it ends; a 405 means the server has none.
    asio::awaitable<void> listen() {
      auto self = shared_from_this();
      auto wait = 1s;
      std::string last_event_id;
      while (!closed) {
        auto req = make_request(http::method::get);
        req.headers.emplace_back("accept", "text/event-stream");
        if (!last_event_id.empty()) req.headers.emplace_back("last-event-id", last_event_id);
        http::sse_parser events(settings.max_message_bytes);
        http::client::stream_handler handler;
        handler.on_head = [](const http::response&) { return true; };
        handler.on_body = [&, self](std::string_view piece) {
          if (closed) return false;
          for (auto& e : events.feed(piece))
            if (e.type == "message" && !e.data.empty()) deliver(std::move(e.data));
          last_event_id = events.last_event_id();
          return !events.failed();
        };
        auto ended = co_await listener->stream(std::move(req), std::move(handler));
        if (closed) co_return;
        if (ended && ended->status == 405) co_return;
        if (ended && session_lost(*ended)) {
          close_with(fmt::format("lost its session (HTTP {} on the event stream)", ended->status));
          co_return;
        }
        if (ended && ended->status >= 200 && ended->status < 300) wait = 1s;
        else wait = std::min(wait * 2, std::chrono::seconds(30));
        pause.expires_after(wait);
        boost::system::error_code ec;
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
    }
  };

  // Whether `body` is the answer (result or error) to the request with this id.
  static bool answers(std::string_view body, const std::string& id_json) {
    auto decoded = decode(body);
    auto* messages = std::get_if<std::vector<message>>(&decoded);
    if (messages == nullptr) return false;
    return std::any_of(messages->begin(), messages->end(), [&](const message& m) {
      return (m.type == message::kind::result || m.type == message::kind::error) && m.id_json == id_json;
    });
  }

  // The id of a request as JSON text ("" for a notification or an answer).
  static std::string request_id(std::string_view text) {
    auto decoded = decode(text);
    if (auto* messages = std::get_if<std::vector<message>>(&decoded); messages != nullptr && messages->size() == 1 &&
                                                                       messages->front().type == message::kind::request)
      return messages->front().id_json;
    return {};
  }

  std::shared_ptr<state> state_;
};

}  // namespace

std::unique_ptr<transport> make_http_transport(asio::any_io_executor ex, http_settings settings) {
  return std::make_unique<http_transport>(std::move(ex), std::move(settings));
}

}  // namespace stargazer::tools::mcp
