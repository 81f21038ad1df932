#include "transport.hpp"

#include "stargazer/core/error.hpp"

namespace stargazer::redis::detail {

using asio::ip::tcp;

namespace {

// Closes whatever is connecting when the deadline passes; cancelled on completion.
// on_expiry runs only while this object lives (the handler may be queued already when
// the operation completes, so the destructor disarms it).
class connect_deadline {
public:
  connect_deadline(asio::any_io_executor ex, std::chrono::milliseconds timeout, std::function<void()> on_expiry)
      : timer_(std::make_shared<asio::steady_timer>(ex, timeout)), state_(std::make_shared<state>()) {
    timer_->async_wait([st = state_, on_expiry = std::move(on_expiry)](const error_code& ec) {
      if (!ec && !st->disarmed) {
        st->expired = true;
        on_expiry();
      }
    });
  }
  ~connect_deadline() {
    state_->disarmed = true;
    timer_->cancel();
  }
  bool expired() const { return state_->expired; }

private:
  struct state {
    bool expired = false;
    bool disarmed = false;
  };
  std::shared_ptr<asio::steady_timer> timer_;
  std::shared_ptr<state> state_;
};

}  // namespace

std::unique_ptr<asio::ssl::context> make_tls_context(const std::string& ca_file, bool verify) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
  if (verify) {
    ctx->set_verify_mode(asio::ssl::verify_peer);
    if (ca_file.empty()) ctx->set_default_verify_paths();
    else ctx->load_verify_file(ca_file);
  } else {
    ctx->set_verify_mode(asio::ssl::verify_none);
  }
  return ctx;
}

asio::awaitable<std::error_code> transport::connect(const address& where, asio::ssl::context* tls, bool verify,
                                                    std::chrono::milliseconds timeout) {
  close();
  tls_.reset();
  tcp_.reset();
  unix_.reset();
  error_code ec;
  if (where.kind == redis::transport::unix_socket) {
    unix_.emplace(ex_);
    connect_deadline deadline(ex_, timeout, [this] { close(); });
    co_await unix_->async_connect(asio::local::stream_protocol::endpoint(where.path),
                                  asio::redirect_error(asio::use_awaitable, ec));
    if (deadline.expired()) ec = asio::error::timed_out;
    if (ec) close();
    co_return std::error_code(ec);
  }

  tcp::resolver resolver(ex_);
  tcp::resolver::results_type endpoints;
  {
    connect_deadline deadline(ex_, timeout, [&resolver] { resolver.cancel(); });
    endpoints = co_await resolver.async_resolve(where.host, std::to_string(where.port),
                                                asio::redirect_error(asio::use_awaitable, ec));
    if (deadline.expired()) ec = asio::error::timed_out;
    if (ec) co_return std::error_code(ec);
  }

  tcp::socket* socket = nullptr;
  if (where.kind == redis::transport::tls) {
    if (tls == nullptr) co_return std::error_code(make_error_code(errc::invalid_argument));
    tls_ = std::make_unique<asio::ssl::stream<tcp::socket>>(ex_, *tls);
    socket = &tls_->next_layer();
  } else {
    tcp_.emplace(ex_);
    socket = &*tcp_;
  }
  connect_deadline deadline(ex_, timeout, [this] { close(); });
  co_await asio::async_connect(*socket, endpoints, asio::redirect_error(asio::use_awaitable, ec));
  if (!ec) socket->set_option(tcp::no_delay(true), ec);
  if (!ec && tls_) {
    // SNI only for host names: RFC 6066 section 3 forbids IP literals in it. An IP is still
    // checked against the certificate's IP SANs by host_name_verification below.
    error_code not_an_ip;
    (void)asio::ip::make_address(where.host, not_an_ip);
    if (not_an_ip && !SSL_set_tlsext_host_name(tls_->native_handle(), where.host.c_str()))
      ec = error_code(static_cast<int>(::ERR_get_error()), asio::error::get_ssl_category());
    if (!ec && verify) tls_->set_verify_callback(asio::ssl::host_name_verification(where.host));
    if (!ec) co_await tls_->async_handshake(asio::ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, ec));
  }
  if (deadline.expired()) ec = asio::error::timed_out;
  if (ec) close();
  co_return std::error_code(ec);
}

asio::awaitable<std::size_t> transport::read_some(asio::mutable_buffer buf, std::error_code& out) {
  error_code ec = asio::error::not_connected;
  std::size_t n = 0;
  if (tls_) n = co_await tls_->async_read_some(buf, asio::redirect_error(asio::use_awaitable, ec));
  else if (tcp_) n = co_await tcp_->async_read_some(buf, asio::redirect_error(asio::use_awaitable, ec));
  else if (unix_) n = co_await unix_->async_read_some(buf, asio::redirect_error(asio::use_awaitable, ec));
  out = ec;
  co_return n;
}

asio::awaitable<void> transport::write(const std::vector<asio::const_buffer>& bufs, std::error_code& out) {
  error_code ec = asio::error::not_connected;
  if (tls_) co_await asio::async_write(*tls_, bufs, asio::redirect_error(asio::use_awaitable, ec));
  else if (tcp_) co_await asio::async_write(*tcp_, bufs, asio::redirect_error(asio::use_awaitable, ec));
  else if (unix_) co_await asio::async_write(*unix_, bufs, asio::redirect_error(asio::use_awaitable, ec));
  out = ec;
}

void transport::close() {
  error_code ignored;
  if (tls_) {
    tls_->next_layer().shutdown(tcp::socket::shutdown_both, ignored);
    tls_->next_layer().close(ignored);
  }
  if (tcp_) {
    tcp_->shutdown(tcp::socket::shutdown_both, ignored);
    tcp_->close(ignored);
  }
  if (unix_) {
    unix_->shutdown(asio::local::stream_protocol::socket::shutdown_both, ignored);
    unix_->close(ignored);
  }
}

bool transport::is_open() const {
  if (tls_) return tls_->next_layer().is_open();
  if (tcp_) return tcp_->is_open();
  if (unix_) return unix_->is_open();
  return false;
}

}  // namespace stargazer::redis::detail
