#pragma once
// One Redis connection (TCP, TLS or unix socket) with automatic pipelining, modelled on
// Boost.Redis: run() keeps the connection healthy (connect, AUTH/SELECT/SETNAME,
// health-check PING, reconnect with capped exponential backoff and jitter, Sentinel
// discovery), and exec() may be called concurrently from any number of coroutines:
// requests waiting to be written are coalesced into one write and replies are matched
// in order.
//
// Threading: every member is called on the executor's thread (a single-threaded
// io_context). Cancellation: stop() fails waiting requests with errc::shutting_down.
//
// Blocking commands (XREADGROUP BLOCK, BLPOP) must get a connection of their own with
// health_check_interval = 0 and a command timeout longer than the block time: a
// blocked RESP2 connection serves no one else.

#include "stargazer/core/result.hpp"
#include "stargazer/redis/reply.hpp"
#include "stargazer/redis/request.hpp"
#include "stargazer/redis/url.hpp"

#include <utility>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace stargazer::metrics {
class registry;
}

namespace stargazer::redis {

class expiry_memo;

struct sentinel_settings {
  std::vector<std::string> addresses;  // host:port of each sentinel
  std::string master_name = "mymaster";
  std::string username;  // AUTH for the sentinels themselves (often none)
  std::string password;
};

struct connection_settings {
  address server;                    // the master's address when no sentinels are given
  sentinel_settings sentinel;        // non-empty addresses: discover the master through them
  std::string client_name = "stargazer";  // CLIENT SETNAME; empty: not sent
  std::string tls_ca_file;           // rediss://: CA bundle; empty: system store
  bool tls_verify = true;            // rediss://: verify the certificate and host name
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds command_timeout{5000};       // default deadline of exec()
  std::chrono::milliseconds health_check_interval{2000}; // PING when idle; 0 disables
  std::chrono::milliseconds reconnect_min{50};           // backoff starts here, doubles,
  std::chrono::milliseconds reconnect_max{2000};         // is capped here, with ±25% jitter
  std::size_t max_reply_bytes = 64 * 1024 * 1024;        // larger replies drop the connection
  std::string metrics_name = "main";                     // `connection` label of metrics
};

// Builds settings from a URL (see url.hpp); throws std::invalid_argument naming the problem.
connection_settings settings_from_url(std::string_view url);

struct connection_stats {
  bool connected = false;
  std::uint64_t reconnects = 0;  // successful connects after the first
  std::size_t in_flight = 0;     // written, awaiting a reply
  std::size_t waiting = 0;       // queued, not yet written
  std::string last_error;
  std::string endpoint;          // where it is (or was last) connected
};

class connection {
public:
  connection(boost::asio::any_io_executor ex, connection_settings settings,
             metrics::registry* metrics = nullptr);
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  // Starts the run loop (connects in the background). Requests issued before the first
  // connect wait for it, up to their deadlines.
  void start();
  // Closes the connection, fails every waiting request, ends the run loop.
  void stop();

  // Sends `req` and returns one reply per command. Transport failures (timeout, lost
  // connection, shutting down) are the error; Redis error replies are replies.
  boost::asio::awaitable<result<std::vector<reply>>> exec(request req);
  // One command: co_await conn.command("SET", key, value).
  template <class... Args>
  boost::asio::awaitable<result<reply>> command(Args&&... args);
  // exec() for a single-command request.
  boost::asio::awaitable<result<reply>> exec_one(request req);

  // Runs a Lua script by EVALSHA, loading it with EVAL when the server answers NOSCRIPT.
  boost::asio::awaitable<result<reply>> eval(const class script& s, const std::vector<std::string>& keys,
                                             const std::vector<std::string>& args);

  // Waits until connected or `timeout` passes; true when connected.
  boost::asio::awaitable<bool> wait_connected(std::chrono::milliseconds timeout);

  // Pub/Sub: messages, pattern messages and (un)subscribe confirmations arrive as
  // arrays, not as replies to commands. Setting a push handler switches the
  // connection to subscriber mode (see subscriber.hpp, which builds on this).
  using push_handler = std::function<void(reply&&)>;
  void set_push_handler(push_handler h);
  // Commands sent after every (re)connect, after AUTH/SELECT/SETNAME (e.g. SUBSCRIBE).
  void set_on_connect(std::function<request()> make_setup);

  // Drops the current connection and reconnects (used on READONLY and +switch-master).
  void reconnect();

  // The keys whose TTL this connection refreshed lately (see expiry_memo.hpp).
  expiry_memo& expiries();

  connection_stats stats() const;
  const connection_settings& settings() const;
  boost::asio::any_io_executor get_executor() const;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

template <class... Args>
boost::asio::awaitable<result<reply>> connection::command(Args&&... args) {
  request req;
  req.push(std::forward<Args>(args)...);
  return exec_one(std::move(req));
}

}  // namespace stargazer::redis
