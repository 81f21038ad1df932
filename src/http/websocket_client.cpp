#include "stargazer/http/websocket_client.hpp"

#include "stargazer/core/error.hpp"
#include "stargazer/core/spawn.hpp"
#include "stargazer/http/base_url.hpp"

#include "../core/detail/net.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <deque>
#include <optional>

namespace stargazer::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = boost::beast::websocket;
using asio::ip::tcp;
using boost::system::error_code;

struct websocket_client::impl : std::enable_shared_from_this<impl> {
  virtual ~impl() = default;
  virtual asio::awaitable<result<websocket_message>> read() = 0;
  virtual void send(std::string text) = 0;
  virtual void close(int code) = 0;
  virtual void abort() = 0;
  virtual bool is_open() const = 0;
  int close_code = 0;
  std::string close_reason;
};

namespace {

template <class NextLayer>
struct stream_impl final : websocket_client::impl {
  stream_impl(std::unique_ptr<asio::ssl::context> tls_context, websocket::stream<NextLayer> stream,
              std::size_t max_queued)
      : tls(std::move(tls_context)), ws(std::move(stream)), max_queued(max_queued) {}

  std::unique_ptr<asio::ssl::context> tls;  // outlives the stream that uses it
  websocket::stream<NextLayer> ws;
  std::size_t max_queued;
  std::deque<std::string> queue;
  std::optional<int> close_requested;
  bool writing = false;
  bool closed = false;

  asio::awaitable<result<websocket_message>> read() override {
    beast::flat_buffer buffer;
    error_code ec;
    co_await ws.async_read(buffer, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      closed = true;
      if (ec == websocket::error::closed) {
        close_code = ws.reason().code;
        close_reason = std::string(ws.reason().reason.c_str());
      } else if (close_code == 0) {
        close_code = 1006;  // abnormal closure: no close frame
      }
      if (ec == websocket::error::message_too_big) co_return make_error_code(errc::reply_too_large);
      co_return std::error_code(ec);
    }
    co_return websocket_message{beast::buffers_to_string(buffer.data()), ws.got_binary()};
  }

  void send(std::string text) override {
    if (closed || close_requested) return;
    if (queue.size() >= max_queued) {
      abort();
      return;
    }
    queue.push_back(std::move(text));
    start_writer();
  }

  void close(int code) override {
    if (closed || close_requested) return;
    close_requested = code;
    start_writer();
  }

  void abort() override {
    closed = true;
    error_code ignored;
    beast::get_lowest_layer(ws).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(ws).socket().close(ignored);
  }

  bool is_open() const override { return !closed && ws.is_open(); }

  void start_writer() {
    if (writing) return;
    writing = true;
    auto self = std::static_pointer_cast<stream_impl>(shared_from_this());
    spawn(ws.get_executor(), write_loop(self), "websocket-client");
  }

  static asio::awaitable<void> write_loop(std::shared_ptr<stream_impl> self) {
    error_code ec;
    while (!ec && !self->closed && !self->queue.empty()) {
      self->ws.text(true);
      co_await self->ws.async_write(asio::buffer(self->queue.front()), asio::redirect_error(asio::use_awaitable, ec));
      self->queue.pop_front();
    }
    if (!ec && !self->closed && self->close_requested) {
      co_await self->ws.async_close(websocket::close_reason(static_cast<std::uint16_t>(*self->close_requested)),
                                    asio::redirect_error(asio::use_awaitable, ec));
    }
    self->writing = false;
    if (ec) self->abort();
  }
};

struct parsed_url {
  base_url origin;
  std::string target;
};

std::optional<parsed_url> parse_ws_url(const std::string& url) {
  std::string rest;
  std::string scheme;
  if (url.starts_with("ws://")) scheme = "http://", rest = url.substr(5);
  else if (url.starts_with("wss://")) scheme = "https://", rest = url.substr(6);
  else return std::nullopt;
  std::string query;
  if (const auto q = rest.find('?'); q != std::string::npos) {
    query = rest.substr(q);
    rest.resize(q);
  }
  auto origin = parse_base_url(scheme + rest);
  if (!origin) return std::nullopt;
  std::string target = origin->path_prefix.empty() ? "/" : origin->path_prefix;
  return parsed_url{*origin, target + query};
}

template <class NextLayer>
void configure(websocket::stream<NextLayer>& ws, const websocket_client_settings& settings) {
  ws.read_message_max(settings.max_message_bytes);
  auto timeouts = websocket::stream_base::timeout::suggested(beast::role_type::client);
  timeouts.handshake_timeout = settings.connect_timeout;
  ws.set_option(timeouts);
  ws.set_option(websocket::stream_base::decorator(
      [](websocket::request_type& req) { req.set(beast::http::field::user_agent, "stargazer"); }));
}

}  // namespace

websocket_client::websocket_client(std::shared_ptr<impl> i) : impl_(std::move(i)) {}

websocket_client::~websocket_client() {
  if (impl_) impl_->abort();
}

asio::awaitable<result<std::unique_ptr<websocket_client>>> websocket_client::connect(asio::any_io_executor ex,
                                                                                      const std::string& url,
                                                                                      websocket_client_settings settings) {
  const auto where = parse_ws_url(url);
  if (!where) co_return make_error_code(errc::invalid_argument);
  const auto& origin = where->origin;
  error_code ec;
  tcp::resolver resolver(ex);
  tcp::resolver::results_type endpoints;
  {
    net::deadline guard(ex, settings.connect_timeout, [&resolver] { resolver.cancel(); });
    endpoints = co_await resolver.async_resolve(origin.host, std::to_string(origin.port),
                                                asio::redirect_error(asio::use_awaitable, ec));
    if (guard.expired()) co_return make_error_code(errc::timeout);
    if (ec) co_return std::error_code(ec);
  }
  std::shared_ptr<impl> connected;
  if (origin.tls) {
    auto context = net::make_tls_client_context(settings.tls_ca_file, settings.tls_verify);
    websocket::stream<asio::ssl::stream<beast::tcp_stream>> ws(ex, *context);
    beast::get_lowest_layer(ws).expires_after(settings.connect_timeout);
    co_await beast::get_lowest_layer(ws).async_connect(endpoints, asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) ec = net::prepare_tls_client(ws.next_layer(), origin.host, settings.tls_verify);
    if (!ec)
      co_await ws.next_layer().async_handshake(asio::ssl::stream_base::client,
                                               asio::redirect_error(asio::use_awaitable, ec));
    beast::get_lowest_layer(ws).expires_never();  // the WebSocket's own timeouts from here
    if (!ec) {
      configure(ws, settings);
      co_await ws.async_handshake(origin.authority(), where->target, asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec) co_return std::error_code(ec == beast::error::timeout ? make_error_code(errc::timeout) : std::error_code(ec));
    connected = std::make_shared<stream_impl<asio::ssl::stream<beast::tcp_stream>>>(std::move(context), std::move(ws),
                                                                                     settings.max_queued_messages);
  } else {
    websocket::stream<beast::tcp_stream> ws(ex);
    beast::get_lowest_layer(ws).expires_after(settings.connect_timeout);
    co_await beast::get_lowest_layer(ws).async_connect(endpoints, asio::redirect_error(asio::use_awaitable, ec));
    beast::get_lowest_layer(ws).expires_never();
    if (!ec) {
      configure(ws, settings);
      co_await ws.async_handshake(origin.authority(), where->target, asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec) co_return std::error_code(ec == beast::error::timeout ? make_error_code(errc::timeout) : std::error_code(ec));
    connected = std::make_shared<stream_impl<beast::tcp_stream>>(nullptr, std::move(ws), settings.max_queued_messages);
  }
  co_return std::unique_ptr<websocket_client>(new websocket_client(std::move(connected)));
}

asio::awaitable<result<websocket_message>> websocket_client::read() {
  auto keep = impl_;  // the client may be destroyed while the read waits
  co_return co_await keep->read();
}
int websocket_client::close_code() const { return impl_->close_code; }
std::string websocket_client::close_reason() const { return impl_->close_reason; }
void websocket_client::send(std::string text) { impl_->send(std::move(text)); }
void websocket_client::close(int code) { impl_->close(code); }
void websocket_client::abort() { impl_->abort(); }
bool websocket_client::is_open() const { return impl_->is_open(); }

}  // namespace stargazer::http
