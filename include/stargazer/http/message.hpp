#pragma once
// HTTP requests and responses as plain values, so handlers and the router are pure
// functions testable without sockets. The server converts to and from Beast.

#include <utility>  // before Asio: 1.18's awaitable.hpp uses std::exchange
#include <boost/asio/awaitable.hpp>

#include <any>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace stargazer::http {

enum class method { get, head, post, put, patch, delete_, options, other };

std::string_view to_string(method m);
method method_from(std::string_view name);

struct request {
  method verb = method::get;
  std::string target;  // as received: path plus query
  std::string path;    // target before '?', not decoded
  std::string query;   // target after '?', not decoded
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  // The client: the TCP peer, or behind a trusted proxy the client its X-Forwarded-For
  // names (http::trusted_proxies::client_of).
  std::string remote_address;
  // The TCP peer is one of --http-trusted-proxies, so its X-Forwarded-* headers are believed.
  bool via_trusted_proxy = false;
  // What a WebSocket route's authorize step learned about the client (e.g. its session),
  // handed to the route's open callback with the upgrade request.
  std::any context;
  // Filled by the router: {name} segments of the matched pattern, percent-decoded.
  std::map<std::string, std::string, std::less<>> path_params;
  // The matched pattern (low-cardinality label for metrics), empty when none matched.
  std::string route;

  // First header with this (case-insensitive) name.
  std::optional<std::string_view> header(std::string_view name) const;
  // Query parameter, percent-decoded ('+' is a space); nullopt when absent or malformed.
  std::optional<std::string> query_param(std::string_view name) const;
  std::string_view path_param(std::string_view name) const;
  // The value of the cookie `name` in the Cookie header(s) (RFC 6265 "name=value; ..."),
  // nullopt when absent. The first one wins, as browsers send the most specific first.
  std::optional<std::string_view> cookie(std::string_view name) const;
  // The credential of an "Authorization: Bearer <token>" header; empty when there is none.
  std::string_view bearer_token() const;
};

struct response {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // A streamed body (Server-Sent Events): sent chunked after the headers; each call
  // appends the next piece to `out` and returns false after the last one. The
  // connection closes when the stream ends or the client goes away.
  std::function<boost::asio::awaitable<bool>(std::string& out)> stream;

  // First header with this (case-insensitive) name (responses read by http::client).
  std::optional<std::string_view> header(std::string_view name) const;

  static response json(unsigned status, std::string body);
  static response text(unsigned status, std::string body, std::string content_type = "text/plain; charset=utf-8");
  // The one error shape of every route: {"error": {"code": ..., "message": ...}}.
  static response error(unsigned status, std::string_view code, std::string_view message);
};

}  // namespace stargazer::http
