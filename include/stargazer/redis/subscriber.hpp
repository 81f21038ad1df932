#pragma once
// A Pub/Sub connection: SUBSCRIBE/PSUBSCRIBE and their inverses, messages delivered to
// coroutines through receive(). Subscriptions are remembered and restored after every
// reconnect. Messages published while the connection is down are lost (Pub/Sub has no
// history); use streams where that matters.

#include "stargazer/core/result.hpp"
#include "stargazer/redis/connection.hpp"

#include <deque>
#include <set>
#include <string>

namespace stargazer::redis {

struct pubsub_message {
  std::string pattern;  // empty for SUBSCRIBE deliveries
  std::string channel;
  std::string payload;
};

class subscriber {
public:
  subscriber(boost::asio::any_io_executor ex, connection_settings settings, metrics::registry* metrics = nullptr,
             std::size_t max_queued = 10'000);
  ~subscriber();

  void start();
  void stop();

  // Each returns once the command is written (or failed to be); the subscription is
  // also recorded for resubscription, so it takes effect on the next connect at the latest.
  boost::asio::awaitable<std::error_code> subscribe(std::vector<std::string> channels);
  boost::asio::awaitable<std::error_code> psubscribe(std::vector<std::string> patterns);
  boost::asio::awaitable<std::error_code> unsubscribe(std::vector<std::string> channels);
  boost::asio::awaitable<std::error_code> punsubscribe(std::vector<std::string> patterns);

  // The next message; errc::shutting_down after stop(). One receiver at a time.
  boost::asio::awaitable<result<pubsub_message>> receive();
  // Alternatively, a callback for every message (then receive() gets nothing).
  void set_handler(std::function<void(pubsub_message&&)> handler);

  // Messages dropped because the queue was full (a slow receiver).
  std::uint64_t dropped() const;
  // Confirmed active subscriptions (channels + patterns) on the current connection.
  std::size_t confirmed() const;
  connection& link();

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::redis
