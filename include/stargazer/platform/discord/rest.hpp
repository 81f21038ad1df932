#pragma once
// Discord's HTTP API (https://discord.com/api/v10) with its rate limits kept in Redis, so
// that every gateway process together stays within them (docs/discord.md, "Rate limits"):
// per-route buckets learned from X-RateLimit-Bucket/-Limit/-Remaining/-Reset-After and
// counted per major parameter (the channel), the global limit per bot (50 requests per
// second), and a 429's retry_after (X-RateLimit-Scope says which limit) honoured by all.
// A request the known state says would be refused waits instead of being sent: Discord
// bans tokens that make 10,000 invalid requests in 10 minutes.

#include "stargazer/core/result.hpp"
#include "stargazer/http/message.hpp"

#include <utility>  // before Asio: 1.18's awaitable.hpp uses std::exchange
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <memory>
#include <string>

namespace stargazer::metrics {
class registry;
}
namespace stargazer::redis {
class connection;
}

namespace stargazer::platform::discord {

struct rest_settings {
  std::string api_url = "https://discord.com/api/v10";
  std::string token;
  int global_per_second = 50;
  std::chrono::milliseconds timeout{15'000};
  int max_attempts = 5;                         // sends of one request (429s and 5xx)
  std::chrono::milliseconds max_wait{60'000};   // a request waiting longer for its bucket fails
  std::string key_prefix = "sg:discord:rl";
};

struct rest_request {
  http::method verb = http::method::get;
  std::string path;         // "/channels/123/messages?limit=10", after the API base
  std::string route;        // "POST /channels/{channel_id}/messages": the bucket's route
  std::string major;        // the major parameter's value (the channel id), "" for none
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
};

class rest_client {
public:
  rest_client(boost::asio::any_io_executor ex, redis::connection& redis, rest_settings settings,
              metrics::registry* metrics = nullptr);
  ~rest_client();

  // Any complete response is a value (4xx included: callers read Discord's error body);
  // 429 and 5xx are retried up to max_attempts. Errors: transport, errc::timeout (the
  // request or its wait for the bucket).
  boost::asio::awaitable<result<http::response>> send(rest_request req);

  // Requests answered 401, 403 or 429 (Discord counts them towards a ban).
  std::uint64_t invalid_requests() const;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::platform::discord
