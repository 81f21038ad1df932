#include "stargazer/http/server.hpp"

#include "stargazer/core/spawn.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/core/strings.hpp"
#include "stargazer/http/router.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <array>
#include <deque>
#include <sstream>
#include <unordered_map>

namespace stargazer::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

const log::logger& server_log() {
  static const log::logger instance("http");
  return instance;
}

request to_request(bhttp::request<bhttp::string_body>&& in, std::string remote_address) {
  request out;
  out.verb = method_from(std::string_view(in.method_string().data(), in.method_string().size()));
  out.target = std::string(in.target());
  const auto q = out.target.find('?');
  out.path = out.target.substr(0, q);
  if (q != std::string::npos) out.query = out.target.substr(q + 1);
  out.headers.reserve(16);
  for (const auto& field : in)
    out.headers.emplace_back(ascii_lower(std::string_view(field.name_string().data(), field.name_string().size())),
                             std::string(field.value()));
  out.body = std::move(in.body());
  out.remote_address = std::move(remote_address);
  return out;
}

bhttp::response<bhttp::string_body> to_beast(response&& in, unsigned version, bool keep_alive, bool head) {
  bhttp::response<bhttp::string_body> out{static_cast<bhttp::status>(in.status), version};
  out.set(bhttp::field::server, "stargazer");
  if (!in.content_type.empty()) out.set(bhttp::field::content_type, in.content_type);
  for (auto& [k, v] : in.headers) out.insert(k, v);
  out.keep_alive(keep_alive);
  if (head) {
    out.content_length(in.body.size());
  } else {
    out.body() = std::move(in.body);
    out.prepare_payload();
  }
  return out;
}

// Every X-Forwarded-For line, joined into one list (RFC 9110 5.3).
std::string forwarded_for(const bhttp::fields& fields) {
  std::string list;
  const auto [first, last] = fields.equal_range("X-Forwarded-For");
  for (auto it = first; it != last; ++it) {
    if (!list.empty()) list += ',';
    list.append(it->value().data(), it->value().size());
  }
  return list;
}

// Connections and proxied requests held per client address.
using address_counts = std::unordered_map<std::string, std::size_t>;

// One place under the per-address cap, given back when dropped: every path that closes a
// connection or ends a proxied request destroys its slot.
class address_slot {
public:
  address_slot() = default;  // holds nothing (no cap, or a trusted proxy's connection)
  address_slot(std::shared_ptr<address_counts> counts, std::string address)
      : counts_(std::move(counts)), address_(std::move(address)) {
    ++(*counts_)[address_];
  }
  address_slot(address_slot&&) noexcept = default;
  address_slot& operator=(address_slot&& other) noexcept {
    if (this != &other) {
      release();
      counts_ = std::move(other.counts_);
      address_ = std::move(other.address_);
    }
    return *this;
  }
  ~address_slot() { release(); }

private:
  void release() {
    if (!counts_) return;
    if (auto it = counts_->find(address_); it != counts_->end() && --it->second == 0) counts_->erase(it);
    counts_.reset();
  }

  std::shared_ptr<address_counts> counts_;  // shared: a slot may outlive the server's impl
  std::string address_;
};

constexpr std::string_view over_cap_message = "too many connections from this address";

}  // namespace

// ---------------------------------------------------------------------------------------
// WebSocket

class beast_websocket_session final : public websocket_session,
                                      public std::enable_shared_from_this<beast_websocket_session> {
public:
  beast_websocket_session(beast::tcp_stream&& stream, request req, const server_settings& settings)
      : ws_(std::move(stream)), request_(std::move(req)), max_queued_(settings.websocket_max_queued_messages) {
    ws_.read_message_max(settings.websocket_max_message_bytes);
  }

  const request& upgrade_request() const override { return request_; }

  void send(std::string text) override {
    if (closed_) return;
    if (queue_.size() >= max_queued_) {
      server_log().warn("websocket client too slow ({} queued messages); closing", queue_.size());
      close();
      return;
    }
    queue_.push_back(std::move(text));
    if (!writing_) {
      writing_ = true;
      spawn(ws_.get_executor(), write_loop(shared_from_this()), "websocket");
    }
  }

  void close() override {
    if (closed_) return;
    closed_ = true;
    error_code ec;
    beast::get_lowest_layer(ws_).socket().shutdown(tcp::socket::shutdown_both, ec);
    beast::get_lowest_layer(ws_).socket().close(ec);
  }

  asio::awaitable<void> run(bhttp::request<bhttp::string_body> upgrade,
                            const std::function<void(std::shared_ptr<websocket_session>)>& open) {
    auto self = shared_from_this();
    beast::get_lowest_layer(ws_).expires_never();
    ws_.set_option(beast::websocket::stream_base::timeout::suggested(beast::role_type::server));
    error_code ec;
    co_await ws_.async_accept(upgrade, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
    open(self);
    beast::flat_buffer buffer;
    while (!closed_) {
      co_await ws_.async_read(buffer, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      if (on_message) {
        const auto data = buffer.data();
        on_message(std::string_view(static_cast<const char*>(data.data()), data.size()));
      }
      buffer.consume(buffer.size());
    }
    closed_ = true;
    if (on_closed) on_closed();
    on_message = nullptr;  // break reference cycles through captured shared_ptrs
    on_closed = nullptr;
  }

private:
  static asio::awaitable<void> write_loop(std::shared_ptr<beast_websocket_session> self) {
    error_code ec;
    while (!self->queue_.empty() && !self->closed_) {
      self->ws_.text(true);
      co_await self->ws_.async_write(asio::buffer(self->queue_.front()),
                                     asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        self->close();
        break;
      }
      self->queue_.pop_front();
    }
    self->writing_ = false;
  }

  beast::websocket::stream<beast::tcp_stream> ws_;
  request request_;
  std::deque<std::string> queue_;
  std::size_t max_queued_;
  bool writing_ = false;
  bool closed_ = false;
};

// ---------------------------------------------------------------------------------------
// Server

struct http_server::impl : std::enable_shared_from_this<impl> {
  struct connection {
    connection(tcp::socket s, std::string peer, address_slot slot)
        : stream(std::move(s)), peer(std::move(peer)), slot(std::move(slot)) {}
    beast::tcp_stream stream;
    std::string peer;   // the TCP peer's canonical address
    address_slot slot;  // its place under max_connections_per_ip (none for a trusted proxy)
    bool busy = false;  // a handler is running for this connection
    std::weak_ptr<beast_websocket_session> websocket;  // set once upgraded; owns the socket then
  };

  impl(asio::io_context& io, server_settings s, const router& r, metrics::registry& m)
      : io(io),
        settings(std::move(s)),
        routes(r),
        acceptor(io),
        requests_total(m),
        duration(m.make_histogram("stargazer_http_request_duration_seconds",
                                  "Time from a request's last byte to its response, by route")),
        connections_gauge(m.make_gauge("stargazer_http_connections", "Open HTTP and WebSocket connections")),
        rejected_connections(
            m.make_counter("stargazer_http_rejected_connections_total",
                           "Connections closed at once because max_connections was reached")),
        address_limited(
            m.make_counter("stargazer_http_address_limited_total",
                           "Connections and proxied requests refused with 429 because their client "
                           "address had max_connections_per_ip")),
        header_timeouts(
            m.make_counter("stargazer_http_header_timeouts_total",
                           "Connections closed because a request's headers took over header_timeout")) {}

  asio::io_context& io;
  server_settings settings;
  const router& routes;
  tcp::acceptor acceptor;
  metrics::registry& requests_total;
  metrics::histogram& duration;
  metrics::gauge& connections_gauge;
  metrics::counter& rejected_connections;
  metrics::counter& address_limited;
  metrics::counter& header_timeouts;
  std::shared_ptr<address_counts> per_address = std::make_shared<address_counts>();
  std::unordered_map<std::string, websocket_route> websockets;
  std::unordered_map<std::uint64_t, std::weak_ptr<connection>> connections;
  std::uint64_t next_id = 1;
  bool stopping = false;

  void count_request(const request& req, unsigned status) {
    requests_total
        .make_counter("stargazer_http_requests_total", "HTTP requests by method, route and status",
                      {{"method", std::string(to_string(req.verb))},
                       {"route", req.route.empty() ? "unmatched" : req.route},
                       {"status", std::to_string(status)}})
        .inc();
  }

  // A place for `address` under the per-address cap; nullopt when it has its share already.
  std::optional<address_slot> take_slot(const std::string& address) {
    if (settings.max_connections_per_ip == 0) return address_slot{};
    if (auto it = per_address->find(address);
        it != per_address->end() && it->second >= settings.max_connections_per_ip) {
      address_limited.inc();
      return std::nullopt;
    }
    return address_slot(per_address, address);
  }

  // A connection over its address's cap, refused without holding up the accept loop: the
  // 429 goes out in one non-blocking write (it fits the empty send buffer of a new
  // socket; if not, the client just sees the close). What the client sent already is
  // read and dropped, so the close is a FIN rather than a reset that could discard the
  // answer at the client.
  static void refuse_over_cap(tcp::socket& socket) {
    static const std::string answer = [] {
      std::ostringstream out;
      out << to_beast(response::error(429, "too_many_connections", over_cap_message), 11, false, false);
      return out.str();
    }();
    error_code ec;
    socket.non_blocking(true, ec);
    socket.write_some(asio::buffer(answer), ec);
    socket.shutdown(tcp::socket::shutdown_send, ec);
    std::array<char, 4096> sink;
    for (int i = 0; i < 4; ++i) {
      socket.read_some(asio::buffer(sink), ec);
      if (ec) break;
    }
    socket.close(ec);
  }

  asio::awaitable<void> accept_loop() {
    auto self = shared_from_this();
    while (!stopping) {
      error_code ec;
      tcp::socket socket = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (stopping || ec == asio::error::operation_aborted) break;
        server_log().warn("accept failed: {}", ec.message());
        continue;
      }
      if (connections.size() >= settings.max_connections) {
        rejected_connections.inc();
        socket.close(ec);
        continue;
      }
      const auto endpoint = socket.remote_endpoint(ec);
      if (ec) {  // already gone
        socket.close(ec);
        continue;
      }
      auto peer = canonical_address(endpoint.address().to_string()).value_or(std::string());
      address_slot slot;
      // A trusted proxy's connection carries many clients: it is counted per request instead.
      if (!settings.proxies.contains(peer)) {
        auto taken = take_slot(peer);
        if (!taken) {
          refuse_over_cap(socket);
          continue;
        }
        slot = std::move(*taken);
      }
      socket.set_option(tcp::no_delay(true), ec);  // avoid delayed-ACK stalls on keep-alive
      auto conn = std::make_shared<connection>(std::move(socket), std::move(peer), std::move(slot));
      const auto id = next_id++;
      connections.emplace(id, conn);
      connections_gauge.set(static_cast<double>(connections.size()));
      asio::co_spawn(io, session(conn, id), [self, id, exit = spawn_exit{"http-server"}](std::exception_ptr e) {
        self->connections.erase(id);
        self->connections_gauge.set(static_cast<double>(self->connections.size()));
        exit(e);
      });
    }
  }

  static unsigned status_for(const error_code& ec) {
    if (ec == bhttp::error::body_limit) return 413;
    if (ec == bhttp::error::header_limit) return 431;
    return 400;
  }

  // The answer to a request the parser refused, with the same codes whether the limit is
  // found in the headers (a declared Content-Length) or while reading the body.
  asio::awaitable<void> refuse(connection& conn, const error_code& ec) {
    const auto status = status_for(ec);
    if (status == 413)
      co_await write_error_and_close(conn, 413, "body_too_large",
                                     "request body exceeds " + std::to_string(settings.max_body_bytes) + " bytes");
    else if (status == 431)
      co_await write_error_and_close(conn, 431, "headers_too_large",
                                     "request headers exceed " + std::to_string(settings.max_header_bytes) + " bytes");
    else
      co_await write_error_and_close(conn, 400, "bad_request", ec.message());
  }

  asio::awaitable<void> write_error_and_close(connection& conn, unsigned status, std::string_view code,
                                              std::string_view message) {
    auto res = to_beast(response::error(status, code, message), 11, false, false);
    conn.stream.expires_after(settings.write_timeout);
    error_code ec;
    co_await bhttp::async_write(conn.stream, res, asio::redirect_error(asio::use_awaitable, ec));
  }

  // Chunked transfer of a streamed response; ends when the producer does, the client
  // goes away or the server stops.
  asio::awaitable<void> write_stream(connection& conn, response res, unsigned version) {
    bhttp::response<bhttp::empty_body> header{static_cast<bhttp::status>(res.status), version};
    header.set(bhttp::field::server, "stargazer");
    header.set(bhttp::field::content_type, res.content_type);
    header.set(bhttp::field::cache_control, "no-cache");
    for (auto& [k, v] : res.headers) header.insert(k, v);
    header.keep_alive(false);
    header.chunked(true);
    bhttp::response_serializer<bhttp::empty_body> serializer{header};
    error_code ec;
    conn.stream.expires_after(settings.write_timeout);
    co_await bhttp::async_write_header(conn.stream, serializer, asio::redirect_error(asio::use_awaitable, ec));
    std::string chunk;
    bool more = !ec;
    while (more && !stopping) {
      chunk.clear();
      conn.busy = false;  // waiting for events: stop() may close it
      more = co_await res.stream(chunk);
      conn.busy = true;
      if (chunk.empty()) continue;
      conn.stream.expires_after(settings.write_timeout);
      co_await asio::async_write(conn.stream, bhttp::make_chunk(asio::buffer(chunk)),
                                 asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
    }
    co_await asio::async_write(conn.stream, bhttp::make_chunk_last(), asio::redirect_error(asio::use_awaitable, ec));
  }

  asio::awaitable<void> session(std::shared_ptr<connection> conn, std::uint64_t) {
    auto self = shared_from_this();
    beast::flat_buffer buffer;
    error_code ec;
    const bool proxied = settings.proxies.contains(conn->peer);
    for (bool fresh = true; !stopping; fresh = false) {
      bhttp::request_parser<bhttp::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(settings.max_header_bytes));
      parser.body_limit(settings.max_body_bytes);

      // Between requests a kept-alive connection may idle for idle_timeout; a request's
      // headers, from its first byte (a new connection's from accept), get header_timeout.
      // Beast closes the socket when a deadline passes, so a late client gets no 408.
      if (!fresh && buffer.size() == 0) {
        conn->stream.expires_after(settings.idle_timeout);
        const auto n = co_await conn->stream.async_read_some(buffer.prepare(1024),
                                                             asio::redirect_error(asio::use_awaitable, ec));
        if (ec) break;  // closed, reset, idle too long or stopped
        buffer.commit(n);
      }
      conn->stream.expires_after(settings.header_timeout);
      co_await bhttp::async_read_header(conn->stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (ec == beast::error::timeout) header_timeouts.inc();
        if (ec == bhttp::error::end_of_stream || ec == beast::error::timeout ||
            ec == asio::error::operation_aborted || ec == asio::error::connection_reset || stopping ||
            !conn->stream.socket().is_open())
          break;
        co_await refuse(*conn, ec);
        break;
      }

      // Behind a trusted proxy the client is known only now: the request holds a place
      // under its client's cap until its response is written (or its WebSocket closes).
      std::string client = conn->peer;
      address_slot request_slot;
      if (proxied) {
        client = settings.proxies.client_of(conn->peer, forwarded_for(parser.get()));
        auto taken = take_slot(client);
        if (!taken) {
          co_await write_error_and_close(*conn, 429, "too_many_connections", over_cap_message);
          break;
        }
        request_slot = std::move(*taken);
      }

      const auto& header = parser.get();
      if (const auto expect = header[bhttp::field::expect]; iequals(std::string_view(expect.data(), expect.size()), "100-continue")) {
        bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, 11};
        conn->stream.expires_after(settings.write_timeout);
        co_await bhttp::async_write(conn->stream, cont, asio::redirect_error(asio::use_awaitable, ec));
        if (ec) break;
      }

      conn->stream.expires_after(settings.body_timeout);
      co_await bhttp::async_read(conn->stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (ec == beast::error::timeout || ec == asio::error::operation_aborted || stopping) break;
        if (ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message) break;
        co_await refuse(*conn, ec);
        break;
      }
      conn->stream.expires_never();

      auto beast_req = parser.release();
      const unsigned version = beast_req.version();
      const bool keep_alive = beast_req.keep_alive();
      const bool upgrade = beast::websocket::is_upgrade(beast_req);
      const auto started = std::chrono::steady_clock::now();

      if (upgrade) {
        const auto path = std::string(beast_req.target().substr(0, beast_req.target().find('?')));
        if (auto it = websockets.find(path); it != websockets.end()) {
          auto req = to_request(bhttp::request<bhttp::string_body>(beast_req), client);
          req.route = path;
          req.via_trusted_proxy = proxied;
          std::optional<response> refusal;
          if (it->second.authorize) refusal = it->second.authorize(req);
          if (!refusal && it->second.authorize_async) {
            conn->busy = true;  // a graceful stop waits for the lookup like for any request
            refusal = co_await it->second.authorize_async(req);
            conn->busy = false;
          }
          if (refusal) {
            count_request(req, refusal->status);
            auto res = to_beast(std::move(*refusal), version, false, false);
            co_await bhttp::async_write(conn->stream, res, asio::redirect_error(asio::use_awaitable, ec));
            break;
          }
          count_request(req, 101);
          auto ws = std::make_shared<beast_websocket_session>(std::move(conn->stream), std::move(req), settings);
          conn->websocket = ws;
          co_await ws->run(std::move(beast_req), it->second.open);
          co_return;
        }
      }

      auto req = to_request(std::move(beast_req), std::move(client));
      req.via_trusted_proxy = proxied;
      const bool head = req.verb == method::head;
      conn->busy = true;
      auto res = co_await routes.dispatch(req);
      conn->busy = false;
      duration.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      count_request(req, res.status);

      if (res.stream) {
        co_await write_stream(*conn, std::move(res), version);
        break;
      }
      const bool keep = keep_alive && !stopping;
      auto out = to_beast(std::move(res), version, keep, head);
      conn->stream.expires_after(settings.write_timeout);
      co_await bhttp::async_write(conn->stream, out, asio::redirect_error(asio::use_awaitable, ec));
      if (ec || !keep) break;
    }
    conn->stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    conn->stream.close();
  }
};

http_server::http_server(asio::io_context& io, server_settings settings, const router& routes,
                         metrics::registry& metrics)
    : impl_(std::make_shared<impl>(io, std::move(settings), routes, metrics)) {}

http_server::~http_server() {
  error_code ec;
  impl_->acceptor.close(ec);
}

void http_server::add_websocket(std::string path, websocket_route route) {
  impl_->websockets.insert_or_assign(std::move(path), std::move(route));
}

void http_server::listen() {
  auto& s = impl_->settings;
  error_code ec;
  const auto address = asio::ip::make_address(s.host, ec);
  if (ec) throw std::system_error(ec, "--http-host: '" + s.host + "' is not an IP address");
  const tcp::endpoint endpoint(address, s.port);
  auto& acceptor = impl_->acceptor;
  acceptor.open(endpoint.protocol());
  acceptor.set_option(asio::socket_base::reuse_address(true));
  acceptor.bind(endpoint, ec);
  if (ec) throw std::system_error(ec, "cannot bind HTTP server to " + s.host + ":" + std::to_string(s.port));
  acceptor.listen(asio::socket_base::max_listen_connections);
  spawn(impl_->io.get_executor(), impl_->accept_loop(), "http-server");
  server_log().info("listening on http://{}:{}", s.host, port());
}

asio::awaitable<void> http_server::start() {
  listen();
  co_return;
}

std::uint16_t http_server::port() const {
  error_code ec;
  const auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

std::size_t http_server::connection_count() const { return impl_->connections.size(); }

asio::awaitable<void> http_server::stop(std::chrono::milliseconds deadline) {
  auto self = impl_;
  self->stopping = true;
  error_code ec;
  self->acceptor.close(ec);
  const auto close_where = [&](bool only_idle) {
    for (auto& [id, weak] : self->connections) {
      auto conn = weak.lock();
      if (!conn) continue;
      if (auto ws = conn->websocket.lock()) {
        ws->close();
      } else if (!only_idle || !conn->busy) {
        conn->stream.socket().shutdown(tcp::socket::shutdown_both, ec);
        conn->stream.socket().close(ec);
      }
    }
  };
  close_where(true);
  const auto until = std::chrono::steady_clock::now() + deadline;
  asio::steady_timer timer(self->io);
  while (!self->connections.empty() && std::chrono::steady_clock::now() < until) {
    timer.expires_after(std::chrono::milliseconds(20));
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    close_where(true);
  }
  close_where(false);
}

}  // namespace stargazer::http
