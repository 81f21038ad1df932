#include "transport.hpp"

#include "stargazer/core/error.hpp"

#include "../core/detail/net.hpp"

namespace stargazer::redis::detail {

using asio::ip::tcp;

using net::deadline;

asio::awaitable<std::error_code> transport::connect(const address& where, asio::ssl::context* tls, bool verify,
                                                    std::chrono::milliseconds timeout) {
  close();
  tls_.reset();
  tcp_.reset();
  unix_.reset();
  error_code ec;
  if (where.kind == redis::transport::unix_socket) {
    unix_.emplace(ex_);
    deadline guard(ex_, timeout, [this] { close(); });
    co_await unix_->async_connect(asio::local::stream_protocol::endpoint(where.path),
                                  asio::redirect_error(asio::use_awaitable, ec));
    if (guard.expired()) ec = asio::error::timed_out;
    if (ec) close();
    co_return std::error_code(ec);
  }

  tcp::resolver resolver(ex_);
  tcp::resolver::results_type endpoints;
  {
    deadline guard(ex_, timeout, [&resolver] { resolver.cancel(); });
    endpoints = co_await resolver.async_resolve(where.host, std::to_string(where.port),
                                                asio::redirect_error(asio::use_awaitable, ec));
    if (guard.expired()) ec = asio::error::timed_out;
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
  deadline guard(ex_, timeout, [this] { close(); });
  co_await asio::async_connect(*socket, endpoints, asio::redirect_error(asio::use_awaitable, ec));
  if (!ec) socket->set_option(tcp::no_delay(true), ec);
  if (!ec && tls_) {
    ec = net::prepare_tls_client(*tls_, where.host, verify);
    if (!ec) co_await tls_->async_handshake(asio::ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, ec));
  }
  if (guard.expired()) ec = asio::error::timed_out;
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
