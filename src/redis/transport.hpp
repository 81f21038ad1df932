#pragma once
// Private: one byte stream to a Redis server over TCP, TLS or a unix socket.

#include "stargazer/redis/url.hpp"

#include <utility>  // before Asio: 1.18's awaitable.hpp uses std::exchange
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <vector>

namespace stargazer::redis::detail {

namespace asio = boost::asio;
using boost::system::error_code;

class transport {
public:
  explicit transport(asio::any_io_executor ex) : ex_(std::move(ex)) {}

  // Connects (and for TLS, handshakes) within `timeout`. `tls` is required for rediss.
  asio::awaitable<std::error_code> connect(const address& where, asio::ssl::context* tls, bool verify,
                                           std::chrono::milliseconds timeout);

  asio::awaitable<std::size_t> read_some(asio::mutable_buffer buf, std::error_code& ec);
  asio::awaitable<void> write(const std::vector<asio::const_buffer>& bufs, std::error_code& ec);

  void close();
  bool is_open() const;

private:
  asio::any_io_executor ex_;
  std::optional<asio::ip::tcp::socket> tcp_;
  std::unique_ptr<asio::ssl::stream<asio::ip::tcp::socket>> tls_;
  std::optional<asio::local::stream_protocol::socket> unix_;
};

}  // namespace stargazer::redis::detail
