#include "stargazer/tools/mcp/client.hpp"

#include "stargazer/core/json_value.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/spawn.hpp"
#include "stargazer/core/strings.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <map>
#include <random>

namespace stargazer::tools::mcp {

namespace asio = boost::asio;
using namespace std::chrono_literals;

std::string_view to_string(server_state s) {
  switch (s) {
    case server_state::starting: return "starting";
    case server_state::ready: return "ready";
    case server_state::down: return "down";
    case server_state::stopped: return "stopped";
  }
  return "unknown";
}

namespace {

// A request waiting for its answer: the timer is its deadline, cancelled by the answer.
struct pending_request {
  explicit pending_request(asio::any_io_executor ex) : timer(std::move(ex)) {}
  asio::steady_timer timer;
  std::optional<message> answer;
  std::string failure;
  bool done = false;

  void finish() {
    done = true;
    timer.cancel();
  }
};

// One connection: the transport and whether it ended.
struct connection {
  explicit connection(asio::any_io_executor ex) : ended_signal(std::move(ex)) {}
  // Shared: whoever awaits on it (opening, stopping, sending) keeps it alive.
  std::shared_ptr<transport> link;
  asio::steady_timer ended_signal;  // waits "forever"; cancelled when the connection ends
  bool ended = false;
  std::string why;
};

using request_result = std::variant<message, std::string>;

}  // namespace

struct client::impl : std::enable_shared_from_this<impl> {
  impl(asio::any_io_executor e, std::string n, transport_factory f, client_settings s)
      : ex(std::move(e)), make_transport(std::move(f)), settings(std::move(s)), log("mcp:" + n), sleep(ex) {
    status.name = std::move(n);
  }

  asio::any_io_executor ex;
  transport_factory make_transport;
  client_settings settings;
  log::logger log;
  server_status status;
  std::vector<tool_descriptor> tools;
  std::function<void()> changed;
  std::shared_ptr<connection> current;
  std::map<std::int64_t, std::shared_ptr<pending_request>> pending;
  std::int64_t next_id = 1;
  bool stopping = false;
  bool refreshing = false;
  bool refresh_again = false;
  asio::steady_timer sleep;  // the backoff between connections
  std::minstd_rand jitter{std::random_device{}()};

  void notify() {
    if (changed) changed();
  }

  void set_state(server_state s, std::string detail) {
    status.state = s;
    status.detail = std::move(detail);
    status.tools = tools.size();
    notify();
  }

  void fail_pending(const std::string& why) {
    auto waiting = std::move(pending);
    pending.clear();
    for (auto& [id, p] : waiting) {
      p->failure = why;
      p->finish();
    }
  }

  void connection_ended(const std::shared_ptr<connection>& conn, std::string why) {
    if (conn->ended) return;
    conn->ended = true;
    conn->why = std::move(why);
    conn->ended_signal.cancel();
    if (conn == current) fail_pending(fmt::format("the MCP server '{}' {}", status.name, conn->why));
  }

  void send_in_background(std::shared_ptr<connection> conn, std::string text, std::int64_t id) {
    auto self = shared_from_this();
    spawn(
        ex,
        [self, conn, text = std::move(text), id]() -> asio::awaitable<void> {
          if (conn->ended || !conn->link) co_return;
          auto link = conn->link;
          const auto ec = co_await link->send(text);
          if (!ec) co_return;
          if (id == 0) {
            self->log.debug("could not send a notification: {}", ec.message());
            co_return;
          }
          if (const auto it = self->pending.find(id); it != self->pending.end()) {
            auto p = it->second;
            self->pending.erase(it);
            p->failure = fmt::format("could not send to the MCP server '{}': {}", self->status.name, ec.message());
            p->finish();
          }
        },
        "mcp:" + status.name);
  }

  asio::awaitable<request_result> request(std::string method, std::string params, std::chrono::milliseconds deadline) {
    auto conn = current;
    if (!conn || conn->ended)
      co_return fmt::format("the MCP server '{}' is not connected ({})", status.name,
                            status.detail.empty() ? std::string(to_string(status.state)) : status.detail);
    const auto id = next_id++;
    auto p = std::make_shared<pending_request>(ex);
    p->timer.expires_after(deadline);
    pending.emplace(id, p);
    send_in_background(conn, encode_request(id, method, params), id);
    boost::system::error_code ec;
    co_await p->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!p->done) {
      pending.erase(id);
      // The server may still be working on it: tell it to stop (not for initialize, which
      // the specification says must never be cancelled; its connection is dropped instead).
      if (method != "initialize")
        send_in_background(conn, encode_notification("notifications/cancelled",
                                                     cancelled_params(id, "the deadline passed")), 0);
      co_return fmt::format("the MCP server '{}' did not answer {} within {} ms", status.name, method, deadline.count());
    }
    if (!p->answer) co_return p->failure;
    if (p->answer->type == message::kind::error)
      co_return fmt::format("the MCP server '{}' refused {}: {} (code {})", status.name, method,
                            utf8_prefix(p->answer->error_message, 500), p->answer->error_code);
    co_return std::move(*p->answer);
  }

  void received(const std::shared_ptr<connection>& conn, std::string text) {
    if (conn != current || conn->ended) return;
    auto decoded = decode(text);
    if (auto* why = std::get_if<std::string>(&decoded)) {
      // The specification forbids anything but messages on stdout; a server that writes
      // logs there is survived: the line is skipped, the first ones are logged.
      if (++status.invalid_messages <= 5 || status.invalid_messages % 1000 == 0)
        log.warn("not a JSON-RPC message from the server ({} so far): {}: {}", status.invalid_messages, *why,
                 utf8_prefix(text, 200));
      return;
    }
    for (auto& m : std::get<std::vector<message>>(decoded)) {
      switch (m.type) {
        case message::kind::result:
        case message::kind::error: {
          if (!m.number_id) break;
          const auto it = pending.find(*m.number_id);
          if (it == pending.end()) break;  // answered after its deadline: dropped
          auto p = it->second;
          pending.erase(it);
          p->answer = std::move(m);
          p->finish();
          break;
        }
        case message::kind::request:
          if (m.method == "ping")
            send_in_background(conn, encode_result(m.id_json, "{}"), 0);
          else
            send_in_background(conn,
                               encode_error(m.id_json, rpc_error::method_not_found,
                                            fmt::format("stargazer does not offer '{}'", utf8_prefix(m.method, 100))),
                               0);
          break;
        case message::kind::notification:
          if (m.method == "notifications/tools/list_changed") {
            refresh_tools();
          } else if (m.method == "notifications/message") {
            if (const auto* params = m.params(); params != nullptr && params->IsObject())
              log.info("server log: {}", utf8_prefix(json::to_string(*params), 1000));
          }
          break;
      }
    }
  }

  asio::awaitable<std::variant<std::vector<tool_descriptor>, std::string>> list_tools() {
    std::vector<tool_descriptor> all;
    std::string cursor;
    for (int page = 0; page < 100; ++page) {
      auto answer = co_await request("tools/list", tools_list_params(cursor), settings.handshake_timeout);
      if (auto* why = std::get_if<std::string>(&answer)) co_return std::move(*why);
      const auto* result = std::get<message>(answer).result();
      auto parsed = parse_tools_list(*result);
      if (auto* why = std::get_if<std::string>(&parsed)) co_return std::move(*why);
      auto& list = std::get<tool_page>(parsed);
      for (const auto& skipped : list.skipped) log.warn("tools/list: skipped {}", skipped);
      for (auto& t : list.tools) all.push_back(std::move(t));
      if (list.next_cursor.empty()) co_return all;
      cursor = std::move(list.next_cursor);
    }
    co_return std::string("tools/list did not end within 100 pages");
  }

  // A list_changed notification: list again, coalescing notifications that arrive meanwhile.
  void refresh_tools() {
    if (refreshing) {
      refresh_again = true;
      return;
    }
    refreshing = true;
    auto self = shared_from_this();
    spawn(
        ex,
        [self]() -> asio::awaitable<void> {
          do {
            self->refresh_again = false;
            auto listed = co_await self->list_tools();
            if (auto* tools = std::get_if<std::vector<tool_descriptor>>(&listed)) {
              self->tools = std::move(*tools);
              self->log.info("the tool list changed: {} tools", self->tools.size());
              if (self->status.state == server_state::ready)
                self->set_state(server_state::ready, fmt::format("{} tools", self->tools.size()));
            } else {
              self->log.warn("could not list the tools again: {}", std::get<std::string>(listed));
            }
          } while (self->refresh_again && !self->stopping);
          self->refreshing = false;
        },
        "mcp:" + status.name);
  }

  // Connects and serves until the connection ends; the reason, for the log and status.
  asio::awaitable<std::string> serve_one_connection() {
    auto conn = std::make_shared<connection>(ex);
    conn->link = std::shared_ptr<transport>(make_transport());
    if (!conn->link) co_return std::string("stopped");  // the pool is gone
    conn->ended_signal.expires_at(asio::steady_timer::time_point::max());
    current = conn;
    set_state(server_state::starting, "connecting");
    std::weak_ptr<impl> weak = shared_from_this();
    transport_handlers handlers;
    // Weak: the transport (which the connection owns) holds these handlers.
    std::weak_ptr<connection> weak_conn = conn;
    handlers.on_message = [weak, weak_conn](std::string text) {
      auto self = weak.lock();
      auto c = weak_conn.lock();
      if (self && c) self->received(c, std::move(text));
    };
    handlers.on_closed = [weak, weak_conn](std::string why) {
      auto self = weak.lock();
      auto c = weak_conn.lock();
      if (self && c) self->connection_ended(c, std::move(why));
    };
    auto opening = conn->link;
    const auto open_error = co_await opening->open(std::move(handlers));
    if (!conn->link) co_return std::string("stopped");  // stop() took the link while it opened
    if (open_error) {
      conn->ended = true;
      co_return fmt::format("could not connect: {} [{}]", open_error.message(), conn->link->describe());
    }
    status.transport = conn->link->describe();

    auto init = co_await request("initialize", initialize_params(settings.client_version), settings.handshake_timeout);
    std::string failure;
    if (auto* why = std::get_if<std::string>(&init)) {
      failure = std::move(*why);
    } else if (conn->ended || !conn->link) {
      failure = conn->ended ? conn->why : std::string("stopped");
    } else {
      auto info = parse_initialize_result(*std::get<message>(init).result());
      if (auto* bad = std::get_if<std::string>(&info)) {
        failure = std::move(*bad);
      } else {
        const auto& server = std::get<server_info>(info);
        status.protocol_version = server.protocol_version;
        conn->link->set_protocol_version(server.protocol_version);
        // Sent and delivered before any request: over HTTP each message is its own POST,
        // and a server may refuse requests that overtake it.
        auto sender = conn->link;
        const auto initialized = co_await sender->send(encode_notification("notifications/initialized"));
        if (initialized) failure = fmt::format("could not send notifications/initialized: {}", initialized.message());
        log.info("connected over {}: {} {}, protocol {}", status.transport, utf8_prefix(server.name, 80),
                 utf8_prefix(server.version, 40), server.protocol_version);
        if (!failure.empty() || conn->ended || !conn->link) {
          if (failure.empty()) failure = conn->ended ? conn->why : std::string("stopped");
        } else if (!server.tools) {
          tools.clear();
        } else {
          auto listed = co_await list_tools();
          if (auto* why = std::get_if<std::string>(&listed)) failure = std::move(*why);
          else tools = std::move(std::get<std::vector<tool_descriptor>>(listed));
        }
      }
    }
    if (failure.empty() && !conn->ended && !stopping) {
      ++status.connections;
      set_state(server_state::ready, fmt::format("{} tools", tools.size()));
      // Up until the connection ends; a server that stops answering pings (hung, or an
      // HTTP server gone quiet) is dropped and connected again.
      // Pings only when nothing is in flight (a server that handles one request at a time
      // cannot answer while it works), and two missed in a row end the connection.
      int missed = 0;
      while (!conn->ended && !stopping) {
        conn->ended_signal.expires_after(settings.ping_interval);
        boost::system::error_code ec;
        co_await conn->ended_signal.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        if (conn->ended || stopping) break;
        if (!pending.empty()) continue;
        auto pinged = co_await request("ping", "", settings.ping_timeout);
        if (auto* why = std::get_if<std::string>(&pinged)) {
          if (++missed >= 2 && !conn->ended) connection_ended(conn, "did not answer two pings: " + *why);
        } else {
          missed = 0;
        }
      }
      failure = conn->ended ? conn->why : std::string("stopped");
    } else if (failure.empty()) {
      failure = conn->ended ? conn->why : std::string("stopped");
    }
    conn->ended = true;
    if (auto link = std::move(conn->link)) co_await link->close(settings.stop_grace);
    fail_pending(fmt::format("the MCP server '{}' {}", status.name, failure));
    co_return failure;
  }

  asio::awaitable<void> run() {
    auto backoff = settings.min_backoff;
    while (!stopping) {
      const auto started = std::chrono::steady_clock::now();
      const auto why = co_await serve_one_connection();
      if (stopping) break;
      // A connection that stayed up a while starts the backoff again from the bottom.
      if (std::chrono::steady_clock::now() - started > 60s) backoff = settings.min_backoff;
      const auto wait = backoff / 2 + std::chrono::milliseconds(jitter() % (backoff.count() / 2 + 1));
      log.warn("{}; connecting again in {} ms", why, wait.count());
      set_state(server_state::down, why);
      sleep.expires_after(wait);
      boost::system::error_code ec;
      co_await sleep.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      backoff = std::min(backoff * 2, settings.max_backoff);
    }
  }
};

client::client(asio::any_io_executor ex, std::string server_name, transport_factory make_transport,
               client_settings settings)
    : impl_(std::make_shared<impl>(std::move(ex), std::move(server_name), std::move(make_transport),
                                   std::move(settings))) {}

client::~client() {
  impl_->stopping = true;
  impl_->changed = nullptr;
  impl_->sleep.cancel();
  if (impl_->current) impl_->current->ended_signal.cancel();
}

void client::start() {
  auto self = impl_;
  spawn(impl_->ex, [self]() -> asio::awaitable<void> { co_await self->run(); }, "mcp:" + impl_->status.name);
}

asio::awaitable<void> client::stop() {
  auto self = impl_;
  self->stopping = true;
  self->sleep.cancel();
  if (auto conn = self->current; conn && !conn->ended) {
    conn->ended = true;
    conn->why = "stopped";
    conn->ended_signal.cancel();
    if (auto link = std::move(conn->link)) co_await link->close(self->settings.stop_grace);
  }
  self->fail_pending(fmt::format("the MCP server '{}' is stopping", self->status.name));
  self->set_state(server_state::stopped, "stopped");
}

void client::on_change(std::function<void()> fn) { impl_->changed = std::move(fn); }

server_status client::status() const {
  auto s = impl_->status;
  s.tools = impl_->tools.size();
  return s;
}

const std::vector<tool_descriptor>& client::tools() const { return impl_->tools; }
const std::string& client::name() const { return impl_->status.name; }

asio::awaitable<std::variant<call_outcome, std::string>> client::call_tool(std::string tool, std::string arguments_json,
                                                                          std::chrono::milliseconds deadline) {
  auto self = impl_;
  if (self->status.state != server_state::ready)
    co_return fmt::format("the MCP server '{}' is {}{}", self->status.name, to_string(self->status.state),
                          self->status.detail.empty() ? "" : ": " + self->status.detail);
  auto answer = co_await self->request("tools/call", call_params(tool, arguments_json), deadline);
  if (auto* why = std::get_if<std::string>(&answer)) co_return std::move(*why);
  auto outcome = parse_call_result(*std::get<message>(answer).result());
  if (auto* bad = std::get_if<std::string>(&outcome))
    co_return fmt::format("the MCP server '{}' answered tools/call wrongly: {}", self->status.name, *bad);
  co_return std::move(std::get<call_outcome>(outcome));
}

asio::awaitable<std::optional<std::string>> client::ping(std::chrono::milliseconds deadline) {
  auto self = impl_;
  auto answer = co_await self->request("ping", "", deadline);
  if (auto* why = std::get_if<std::string>(&answer)) co_return std::move(*why);
  co_return std::nullopt;
}

}  // namespace stargazer::tools::mcp
