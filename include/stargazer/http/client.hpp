#pragma once
// An HTTP/1.1 client for one origin (Boost.Beast, coroutines): http:// and https://
// (OpenSSL, certificate and host name verified against the system store by default, SNI),
// a connect deadline and a whole-response deadline, a response size limit, and a small
// pool of idle keep-alive connections. Requests and responses are the plain values of
// http/message.hpp.
//
// Threading: every member is called on the executor's thread (a single-threaded
// io_context, as in every role). Calls may overlap: each in-flight request owns one
// connection; idle ones are pooled. Asio 1.18 has no per-operation cancellation: a
// request ends by its deadlines. The client may be destroyed while calls are in flight
// (they keep its state alive and finish normally); its idle connections close at once.

#include "stargazer/core/result.hpp"
#include "stargazer/http/base_url.hpp"
#include "stargazer/http/message.hpp"

#include <utility>  // before Asio: 1.18's awaitable.hpp uses std::exchange
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace stargazer::http {

struct client_settings {
  std::chrono::milliseconds connect_timeout{10'000};   // resolve + TCP connect + TLS handshake
  std::chrono::milliseconds response_timeout{120'000}; // writing the request to the last byte of the response
  std::size_t max_response_bytes = 8 * 1024 * 1024;    // a larger body fails with errc::reply_too_large
  std::size_t max_header_bytes = 64 * 1024;            // likewise for the response header
  std::size_t max_idle_connections = 4;                // pooled keep-alive connections (0: no reuse)
  std::chrono::milliseconds idle_timeout{30'000};      // a connection idle longer is closed, not reused
  bool tls_verify = true;                              // https: verify certificate and host name
  std::string tls_ca_file;                             // https: CA bundle; empty: the system store
  std::string user_agent = "stargazer";
};

// Counters for tests and diagnostics.
struct client_stats {
  std::uint64_t connections_opened = 0;
  std::uint64_t connections_reused = 0;  // requests sent on a pooled connection
  std::uint64_t stale_retries = 0;       // a pooled connection had been closed: sent again on a new one
};

class client {
public:
  // Throws std::system_error when the TLS context cannot be built (e.g. a missing CA file).
  client(boost::asio::any_io_executor ex, base_url origin, client_settings settings = {});
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  // Sends `req` and reads the whole response. `req.target` is appended to the base path
  // ("/chat/completions" -> "/v1/chat/completions"); `req.headers` are sent as given, plus
  // Host, User-Agent and Content-Length. Any complete response is a value, whatever its
  // status; its header names are lower-cased and `content_type` is filled.
  //
  // Errors: errc::timeout (a deadline passed), errc::reply_too_large, errc::protocol_error
  // (not an HTTP/1.x response); anything else is a transport error (resolve, connect, TLS,
  // reset, closed early) as an Asio/system/SSL error code. A request that fails on a pooled
  // connection before any response byte arrived is sent once more on a new connection.
  boost::asio::awaitable<result<response>> send(request req);

  // Receives a streamed response (see stream()).
  struct stream_handler {
    // The status and headers as soon as they are in (body empty). False stops at once.
    std::function<bool(const response& head)> on_head;
    // Each piece of the body as it arrives. False stops reading.
    std::function<bool(std::string_view piece)> on_body;
  };

  // Sends `req` and, for a 2xx status, hands the body to `handler` piece by piece as it
  // arrives instead of collecting it: for Server-Sent Events and other long-lived
  // responses. Any other status is read whole, as send() reads it, and returned without
  // calling the handler. The stream gets its own connection, never pooled.
  //
  // Deadlines: connect_timeout as in send(); response_timeout up to the header, then as
  // the longest silence between two pieces (a server that sends heartbeats stays open).
  // No size limit applies to a streamed body.
  //
  // Returns the head (status and headers, empty body) when the body ended or a handler
  // returned false; an error code when the exchange failed, also after the head (a
  // connection closed before the end of the body; on_head tells whether the head had
  // arrived), and std::errc::operation_canceled after abort_streams().
  boost::asio::awaitable<result<response>> stream(request req, stream_handler handler);

  // Ends every stream() in flight (closing their connections) and any that is still
  // connecting: they return std::errc::operation_canceled. For a clean shutdown, since
  // Asio 1.18 has no per-operation cancellation.
  void abort_streams();

  // Closes the pooled idle connections.
  void close_idle();

  const base_url& origin() const;
  client_stats stats() const;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

// True for the error code of a passed deadline (errc::timeout).
bool is_timeout(std::error_code ec);

// A Retry-After value (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date (IMF-fixdate,
// the obsolete RFC 850 and asctime forms), as a wait from `now` (zero for a past date).
// nullopt when it is neither.
std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value,
                                                           std::chrono::system_clock::time_point now);

}  // namespace stargazer::http
