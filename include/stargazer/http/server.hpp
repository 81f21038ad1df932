#pragma once
// The HTTP/1.1 server (Boost.Beast, coroutines). It owns connections, timeouts, body
// and header limits, per-address connection caps, keep-alive and the WebSocket upgrade;
// the router owns meaning.
//
// Threading: all members are called on the io_context's thread. Websocket sessions'
// send() and close() likewise.

#include "stargazer/core/service.hpp"
#include "stargazer/http/message.hpp"
#include "stargazer/http/trusted_proxies.hpp"

#include <utility>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace boost::asio {
class io_context;
}

namespace stargazer::metrics {
class registry;
}

namespace stargazer::http {

class router;

struct server_settings {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;  // 0: any free port, see http_server::port()
  std::size_t max_body_bytes = 16 * 1024 * 1024;    // larger bodies get 413
  std::size_t max_header_bytes = 16 * 1024;         // larger headers get 431
  // A kept-alive connection's wait for the first byte of its next request.
  std::chrono::milliseconds idle_timeout{60'000};
  // From accept, or from a kept-alive request's first byte, to the end of its headers;
  // a connection that takes longer is closed (a client trickling bytes holds nothing).
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds body_timeout{60'000};   // reading the body after the headers
  std::chrono::milliseconds write_timeout{30'000};
  std::size_t max_connections = 10'000;             // beyond it, new connections are closed
  // Open connections per client address (0: no cap). One more is answered 429
  // too_many_connections and closed at accept. A trusted proxy's connections are not
  // capped; each of their requests counts, while it runs, for the client its
  // X-Forwarded-For names (see trusted_proxies::client_of), and is refused with 429 once
  // that client holds `max_connections_per_ip` connections and requests.
  std::size_t max_connections_per_ip = 64;
  trusted_proxies proxies;  // empty: X-Forwarded-For is ignored
  std::size_t websocket_max_message_bytes = 64 * 1024;
  std::size_t websocket_max_queued_messages = 1024; // a slower reader is disconnected
};

// One accepted WebSocket. send() queues a text frame; one write is in flight at a time.
class websocket_session {
public:
  virtual ~websocket_session() = default;
  virtual void send(std::string text) = 0;
  virtual void close() = 0;
  virtual const request& upgrade_request() const = 0;

  // Set by the route's open callback; called on the io thread.
  std::function<void(std::string_view)> on_message;
  std::function<void()> on_closed;
};

struct websocket_route {
  // Returns a response to refuse the upgrade (e.g. 403 for a foreign Origin), nullopt to accept.
  std::function<std::optional<response>(request&)> authorize;
  // Called after the handshake; keep the shared_ptr to send later.
  std::function<void(std::shared_ptr<websocket_session>)> open;
  // Checks that need I/O (a session looked up in Redis), run after `authorize` accepted;
  // same contract. It may leave what it learned in request::context for `open`.
  std::function<boost::asio::awaitable<std::optional<response>>(request&)> authorize_async;
};

class http_server final : public component {
public:
  http_server(boost::asio::io_context& io, server_settings settings, const router& routes,
              metrics::registry& metrics);
  ~http_server() override;
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  // Exact-path WebSocket endpoint; requests to it without an Upgrade fall through to the router.
  void add_websocket(std::string path, websocket_route route);

  // Binds and starts accepting. Throws std::system_error naming the address on failure.
  void listen();

  std::string_view name() const override { return "http"; }
  boost::asio::awaitable<void> start() override;
  // The bound port (useful with port 0).
  std::uint16_t port() const;
  std::size_t connection_count() const;

  // Stops accepting, closes idle connections, lets requests in flight finish until
  // `deadline`, then closes the rest.
  boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline) override;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::http
