#include "stargazer/http/client.hpp"

#include "stargazer/core/error.hpp"
#include "stargazer/core/strings.hpp"

#include "../core/detail/net.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <limits>
#include <optional>
#include <vector>

#include <sys/socket.h>

namespace stargazer::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using asio::ip::tcp;
using boost::system::error_code;
using clock_type = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------
// Retry-After

namespace {

std::optional<unsigned> month_of(const char* name) {
  static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  for (unsigned i = 0; i < 12; ++i)
    if (std::string_view(name) == months[i]) return i + 1;
  return std::nullopt;
}

std::optional<std::chrono::system_clock::time_point> parse_http_date(const std::string& text) {
  int day = 0, year = 0, hour = 0, minute = 0, second = 0, used = -1;
  char month[4] = {};
  const auto whole = static_cast<int>(text.size());
  // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
  bool ok = std::sscanf(text.c_str(), "%*3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d GMT%n", &day, month, &year,
                        &hour, &minute, &second, &used) == 6 && used == whole;
  if (!ok) {
    // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
    used = -1;
    ok = std::sscanf(text.c_str(), "%*[A-Za-z], %2d-%3[A-Za-z]-%2d %2d:%2d:%2d GMT%n", &day, month, &year, &hour,
                     &minute, &second, &used) == 6 && used == whole;
    if (ok) year += year < 70 ? 2000 : 1900;
  }
  if (!ok) {
    // asctime: Sun Nov  6 08:49:37 1994
    used = -1;
    ok = std::sscanf(text.c_str(), "%*3[A-Za-z] %3[A-Za-z] %2d %2d:%2d:%2d %4d%n", month, &day, &hour, &minute,
                     &second, &year, &used) == 6 && used == whole;
  }
  if (!ok) return std::nullopt;
  const auto m = month_of(month);
  if (!m || hour > 23 || minute > 59 || second > 60) return std::nullopt;
  const std::chrono::year_month_day ymd{std::chrono::year{year}, std::chrono::month{*m},
                                        std::chrono::day{static_cast<unsigned>(day)}};
  if (!ymd.ok()) return std::nullopt;
  return std::chrono::sys_days{ymd} + std::chrono::hours(hour) + std::chrono::minutes(minute) +
         std::chrono::seconds(second);
}

}  // namespace

std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value,
                                                           std::chrono::system_clock::time_point now) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (value.empty()) return std::nullopt;
  if (value.find_first_not_of("0123456789") == std::string_view::npos) {
    std::uint64_t seconds = 0;
    const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
    (void)ptr;
    constexpr std::uint64_t ceiling = 1'000'000'000;  // ~31 years: "very long", without overflow
    if (ec == std::errc::result_out_of_range || seconds > ceiling) seconds = ceiling;
    return std::chrono::seconds(static_cast<std::int64_t>(seconds));
  }
  const auto when = parse_http_date(std::string(value));
  if (!when) return std::nullopt;
  if (*when <= now) return std::chrono::milliseconds(0);
  return std::chrono::duration_cast<std::chrono::milliseconds>(*when - now);
}

bool is_timeout(std::error_code ec) { return ec == make_error_code(errc::timeout); }

// ---------------------------------------------------------------------------------------
// Client

namespace {

// One connection to the origin, plain or TLS.
struct connection {
  explicit connection(const asio::any_io_executor& ex) : plain(ex) {}

  beast::tcp_stream plain;  // unused once `tls` wraps its own
  std::unique_ptr<ssl::stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;
  clock_type::time_point idle_since;

  beast::tcp_stream& lowest() { return tls ? tls->next_layer() : plain; }

  void close() {
    error_code ignored;
    auto& socket = lowest().socket();
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
  }

  // A pooled connection is usable if the peer has neither closed it nor sent anything
  // unsolicited (a peek that would block). Unsolicited TLS records (a close_notify, a
  // late session ticket) retire the connection too: a new handshake, never a failure.
  bool looks_alive() {
    auto& socket = lowest().socket();
    if (!socket.is_open()) return false;
    char byte = 0;
    const auto n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
};

bool is_http_error(const error_code& ec) {
  return ec.category() == bhttp::make_error_code(bhttp::error::bad_version).category();
}

std::error_code classify(const error_code& ec) {
  if (ec == beast::error::timeout) return make_error_code(errc::timeout);
  if (ec == bhttp::error::body_limit || ec == bhttp::error::header_limit) return make_error_code(errc::reply_too_large);
  if (ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message) return std::error_code(ec);
  if (is_http_error(ec)) return make_error_code(errc::protocol_error);
  return std::error_code(ec);
}

// Status and headers of a parsed response head, as to_response() fills them.
template <class Body>
response head_of(const bhttp::response<Body>& in) {
  response out;
  out.status = in.result_int();
  out.content_type.clear();
  for (const auto& field : in)
    out.headers.emplace_back(ascii_lower(std::string_view(field.name_string().data(), field.name_string().size())),
                             std::string(field.value()));
  if (const auto type = out.header("content-type")) out.content_type = std::string(*type);
  return out;
}

response to_response(bhttp::response<bhttp::string_body>&& in) {
  auto out = head_of(in);
  out.body = std::move(in.body());
  return out;
}

template <class Stream>
asio::awaitable<error_code> exchange(Stream& stream, beast::flat_buffer& buffer,
                                     bhttp::request<bhttp::string_body>& req,
                                     bhttp::response_parser<bhttp::string_body>& parser) {
  error_code ec;
  co_await bhttp::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return ec;
  // The header first: Beast 1.74's eager parse (async_read alone) skips the body limit
  // check of a declared Content-Length.
  co_await bhttp::async_read_header(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return ec;
  co_await bhttp::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  co_return ec;
}

// client::stream() on one connected stream: write, read the head, then the body piece by
// piece into the handler (2xx) or into the response (any other status).
template <class Stream>
asio::awaitable<result<response>> stream_exchange(Stream& stream, beast::tcp_stream& lowest, beast::flat_buffer& buffer,
                                                  bhttp::request<bhttp::string_body>& req,
                                                  client::stream_handler& handler, const client_settings& settings) {
  error_code ec;
  const auto until = clock_type::now() + settings.response_timeout;
  lowest.expires_at(until);
  co_await bhttp::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return classify(ec);
  bhttp::response_parser<bhttp::buffer_body> parser;
  // Streamed bodies have no size limit, collected ones are checked below. Not boost::none:
  // Beast 1.74 compares a Content-Length with the optional limit, and any length is
  // greater than none.
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  parser.header_limit(static_cast<std::uint32_t>(settings.max_header_bytes));
  co_await bhttp::async_read_header(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return classify(ec);
  auto head = head_of(parser.get());
  const bool streamed = head.status >= 200 && head.status < 300;
  if (streamed && handler.on_head && !handler.on_head(head)) co_return head;

  std::string collected;
  std::vector<char> piece(16 * 1024);
  while (!parser.is_done()) {
    parser.get().body().data = piece.data();
    parser.get().body().size = piece.size();
    if (streamed) lowest.expires_after(settings.response_timeout);  // the longest silence
    co_await bhttp::async_read_some(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == bhttp::error::need_buffer) ec = {};
    const auto n = piece.size() - parser.get().body().size;
    if (n > 0 && streamed && handler.on_body && !handler.on_body(std::string_view(piece.data(), n))) co_return head;
    if (n > 0 && !streamed) {
      collected.append(piece.data(), n);
      if (collected.size() > settings.max_response_bytes) co_return make_error_code(errc::reply_too_large);
    }
    if (ec) co_return classify(ec);
  }
  if (!streamed) head.body = std::move(collected);
  co_return head;
}

}  // namespace

struct client::impl {
  impl(asio::any_io_executor ex, base_url o, client_settings s)
      : executor(std::move(ex)), origin(std::move(o)), settings(std::move(s)) {
    if (origin.tls) {
      try {
        tls_context = net::make_tls_client_context(settings.tls_ca_file, settings.tls_verify);
      } catch (const boost::system::system_error& e) {
        throw std::system_error(std::error_code(e.code()),
                                "cannot load the TLS CA file '" + settings.tls_ca_file + "'");
      }
    }
  }

  asio::any_io_executor executor;
  base_url origin;
  client_settings settings;
  std::unique_ptr<ssl::context> tls_context;
  std::vector<std::unique_ptr<connection>> idle;
  client_stats stats;
  bool closed = false;
  std::vector<connection*> streaming;  // connections of the stream() calls in flight
  std::uint64_t stream_aborts = 0;     // abort_streams() calls so far

  bhttp::request<bhttp::string_body> to_beast(request&& req, bool keep_alive) const {
    bhttp::request<bhttp::string_body> out;
    const auto verb = to_string(req.verb);
    out.method_string(beast::string_view(verb.data(), verb.size()));
    out.target(origin.path_prefix + req.target);
    out.version(11);
    out.set(bhttp::field::host, origin.authority());
    out.set(bhttp::field::user_agent, settings.user_agent);
    for (const auto& [name, value] : req.headers) out.insert(name, value);
    out.body() = std::move(req.body);
    out.keep_alive(keep_alive);
    out.prepare_payload();
    return out;
  }

  std::unique_ptr<connection> take_idle() {
    const auto now = clock_type::now();
    while (!idle.empty()) {
      auto c = std::move(idle.back());
      idle.pop_back();
      if (now - c->idle_since < settings.idle_timeout && c->looks_alive()) return c;
      c->close();
    }
    return nullptr;
  }

  void give_back(std::unique_ptr<connection> c) {
    if (closed || idle.size() >= settings.max_idle_connections) {
      c->close();
      return;
    }
    c->idle_since = clock_type::now();
    idle.push_back(std::move(c));
  }

  void close_idle() {
    for (auto& c : idle) c->close();
    idle.clear();
  }

  asio::awaitable<std::error_code> connect(connection& c) {
    const auto until = clock_type::now() + settings.connect_timeout;
    error_code ec;
    tcp::resolver resolver(executor);
    tcp::resolver::results_type endpoints;
    {
      net::deadline guard(executor, settings.connect_timeout, [&resolver] { resolver.cancel(); });
      endpoints = co_await resolver.async_resolve(origin.host, std::to_string(origin.port),
                                                  asio::redirect_error(asio::use_awaitable, ec));
      if (guard.expired()) co_return make_error_code(errc::timeout);
      if (ec) co_return std::error_code(ec);
    }
    if (origin.tls) c.tls = std::make_unique<ssl::stream<beast::tcp_stream>>(executor, *tls_context);
    auto& lowest = c.lowest();
    lowest.expires_at(until);
    co_await lowest.async_connect(endpoints, asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) lowest.socket().set_option(tcp::no_delay(true), ec);
    if (!ec && c.tls) {
      ec = net::prepare_tls_client(*c.tls, origin.host, settings.tls_verify);
      if (!ec) co_await c.tls->async_handshake(ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, ec));
    }
    lowest.expires_never();
    if (ec) c.close();
    else ++stats.connections_opened;
    co_return classify(ec);
  }
};

client::client(asio::any_io_executor ex, base_url origin, client_settings settings)
    : impl_(std::make_shared<impl>(std::move(ex), std::move(origin), std::move(settings))) {}

client::~client() {
  impl_->closed = true;
  impl_->close_idle();
}

void client::close_idle() { impl_->close_idle(); }

const base_url& client::origin() const { return impl_->origin; }

client_stats client::stats() const { return impl_->stats; }

asio::awaitable<result<response>> client::send(request req) {
  auto self = impl_;  // in-flight calls keep the state alive
  auto out = self->to_beast(std::move(req), self->settings.max_idle_connections > 0);

  for (int attempt = 0;; ++attempt) {
    // A retry after a stale pooled connection always takes a new one.
    auto conn = attempt == 0 ? self->take_idle() : nullptr;
    const bool reused = conn != nullptr;
    if (reused) {
      ++self->stats.connections_reused;
    } else {
      conn = std::make_unique<connection>(self->executor);
      if (const auto ec = co_await self->connect(*conn)) co_return ec;
    }

    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(self->settings.max_response_bytes);
    parser.header_limit(static_cast<std::uint32_t>(self->settings.max_header_bytes));
    conn->lowest().expires_after(self->settings.response_timeout);
    error_code ec;
    if (conn->tls) ec = co_await exchange(*conn->tls, conn->buffer, out, parser);
    else ec = co_await exchange(conn->plain, conn->buffer, out, parser);
    conn->lowest().expires_never();

    if (ec) {
      conn->close();
      // The server closed the pooled connection before (or as) we wrote: nothing of a
      // response arrived, so the request is sent again, once, on a new connection.
      if (reused && attempt == 0 && !parser.got_some() && ec != beast::error::timeout) {
        ++self->stats.stale_retries;
        continue;
      }
      co_return classify(ec);
    }

    const bool keep = parser.get().keep_alive();
    auto res = to_response(parser.release());
    if (keep && conn->buffer.size() == 0) self->give_back(std::move(conn));
    else conn->close();
    co_return res;
  }
}

asio::awaitable<result<response>> client::stream(request req, stream_handler handler) {
  auto self = impl_;
  auto out = self->to_beast(std::move(req), false);
  const auto aborts = self->stream_aborts;
  const auto canceled = std::make_error_code(std::errc::operation_canceled);
  auto conn = std::make_unique<connection>(self->executor);
  // Registered before connecting, so that abort_streams() reaches it at every step.
  struct registration {
    impl& owner;
    connection* c;
    ~registration() { std::erase(owner.streaming, c); }
  };
  self->streaming.push_back(conn.get());
  const registration registered{*self, conn.get()};

  const auto connect_error = co_await self->connect(*conn);
  if (aborts != self->stream_aborts) {
    conn->close();
    co_return canceled;
  }
  if (connect_error) co_return connect_error;
  std::optional<result<response>> r;
  if (conn->tls) r.emplace(co_await stream_exchange(*conn->tls, conn->lowest(), conn->buffer, out, handler, self->settings));
  else r.emplace(co_await stream_exchange(conn->plain, conn->plain, conn->buffer, out, handler, self->settings));
  conn->close();
  if (!*r && aborts != self->stream_aborts) co_return canceled;
  co_return std::move(*r);
}

void client::abort_streams() {
  ++impl_->stream_aborts;
  for (auto* c : impl_->streaming) c->close();
}

}  // namespace stargazer::http
