#pragma once
// A WebSocket client (RFC 6455, Boost.Beast) for ws:// and wss:// URLs: connect with a
// deadline (resolve, TCP, TLS with certificate and host name verified, the upgrade), read
// whole messages up to a size limit, send text queued in order, close with a code, or
// drop the connection at once. The Discord gateway's transport.
//
// Threading: every member is called on the executor's thread. One read() at a time;
// send() may be called at any time (one writer drains the queue).

#include "stargazer/core/result.hpp"

#include <utility>  // before Asio: 1.18's awaitable.hpp uses std::exchange
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace stargazer::http {

struct websocket_client_settings {
  std::chrono::milliseconds connect_timeout{10'000};
  std::size_t max_message_bytes = 4 * 1024 * 1024;  // a larger message fails the read (errc::reply_too_large)
  bool tls_verify = true;
  std::string tls_ca_file;  // empty: the system store
  std::size_t max_queued_messages = 256;  // sends beyond it drop the connection
};

struct websocket_message {
  std::string data;
  bool binary = false;
};

class websocket_client {
public:
  ~websocket_client();
  websocket_client(const websocket_client&) = delete;
  websocket_client& operator=(const websocket_client&) = delete;

  // errc::invalid_argument for a URL that is not ws:// or wss://, errc::timeout, or the
  // transport's error (a refused upgrade is boost::beast::websocket::error::upgrade_declined).
  static boost::asio::awaitable<result<std::unique_ptr<websocket_client>>> connect(
      boost::asio::any_io_executor ex, const std::string& url, websocket_client_settings settings = {});

  // The next message. After the peer closed: boost::beast::websocket::error::closed, and
  // close_code() says with which code (0 for none, 1006 when the connection just dropped).
  boost::asio::awaitable<result<websocket_message>> read();
  int close_code() const;
  std::string close_reason() const;

  // Queues a text message.
  void send(std::string text);
  // Sends a close frame with `code` (no further sends) and lets read() finish.
  void close(int code);
  // Drops the TCP connection now, without a close frame: read() fails at once.
  void abort();
  bool is_open() const;

  struct impl;

private:
  explicit websocket_client(std::shared_ptr<impl> i);
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::http
