#pragma once
// Routes (method, pattern) to handlers. Patterns are literal segments and `{name}`
// segments that capture one path segment: "/redis-platform/instances/{instance_id}".
// A path that matches no pattern gets 404; a path that matches with another method
// gets 405 with an `Allow` header. HEAD is served by GET handlers.

#include "stargazer/http/message.hpp"

#include <utility>  // Asio 1.18's awaitable.hpp needs std::exchange declared first.
#include <boost/asio/awaitable.hpp>

#include <functional>
#include <string>
#include <vector>

namespace stargazer::http {

using handler = std::function<boost::asio::awaitable<response>(request&)>;
using sync_handler = std::function<response(request&)>;

class router {
public:
  void add(method verb, std::string pattern, handler h);
  void add(method verb, std::string pattern, sync_handler h);

  // What the router decided for a request; pure, no I/O.
  struct decision {
    const handler* target = nullptr;  // non-null when a route matched
    std::optional<response> immediate;  // 404, 405 or 400 (bad escape) when target is null
  };
  decision route(request& req) const;

  // Runs the matched handler, or returns the 404/405 response. Handler exceptions
  // become a 500 JSON error (the message is logged, not sent).
  boost::asio::awaitable<response> dispatch(request& req) const;

  // Every registered (method, pattern), in registration order.
  std::vector<std::pair<method, std::string>> routes() const;

private:
  struct entry {
    method verb;
    std::string pattern;
    std::vector<std::string> segments;
    handler h;
  };
  std::vector<entry> routes_;
};

}  // namespace stargazer::http
