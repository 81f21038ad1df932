#pragma once
// One shard's connection to the Discord gateway (docs/discord.md, "Gateway"): connect
// (zlib-stream), Hello, heartbeats (the first after interval × random, a missing ACK
// before the next beat = a zombie connection: drop and resume), Identify or Resume,
// dispatches handed to the owner in order with their sequence numbers, op 7 and op 9,
// reconnects with capped exponential backoff and jitter, fatal close codes that stop the
// shard. Gateway commands stay under 120 per 60 s.
//
// The session (id, last sequence, resume URL) is the owner's to keep: it is given at
// start and reported on every change, so another process can resume the shard.

#include "stargazer/core/result.hpp"

#include <utility>  // before Asio: 1.18's awaitable.hpp uses std::exchange
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace stargazer::platform::discord {

struct session_state {
  std::string session_id;
  std::int64_t seq = 0;  // 0: nothing received yet
  std::string resume_url;
  bool resumable() const { return !session_id.empty() && !resume_url.empty(); }
};

struct shard_settings {
  std::string token;
  std::uint32_t intents = 0;
  int shard_id = 0;
  int shard_count = 1;
  std::string gateway_url;  // from GET /gateway/bot
  bool compress = true;     // zlib-stream
  std::chrono::milliseconds connect_timeout{15'000};
  std::chrono::milliseconds backoff_min{1000};
  std::chrono::milliseconds backoff_max{60'000};
  int commands_per_minute = 110;  // Discord closes a connection past 120 per 60 s
  std::size_t max_message_bytes = 4 * 1024 * 1024;
  std::string presence_text;  // sent with Identify
};

struct shard_callbacks {
  // Every dispatch but READY/RESUMED, in order. The owner persists `state` after handling
  // it (the event is on the bus by then), so a takeover resumes after it.
  std::function<boost::asio::awaitable<void>(const std::string& type, const std::string& data_json,
                                             const session_state& state)>
      on_dispatch;
  // READY (a new session; the bot's user id) or RESUMED.
  std::function<boost::asio::awaitable<void>(const session_state& state, const std::string& bot_user_id)> on_ready;
  // Before each Identify: waits until this shard may identify (max_concurrency per 5 s,
  // shared by all processes); false: give up for now (the shard retries after a backoff).
  std::function<boost::asio::awaitable<bool>()> may_identify;
  // A fatal close: the shard stopped and will not reconnect.
  std::function<void(const std::string& reason)> on_fatal;
  // Connected and identified/resumed (true) or disconnected (false).
  std::function<void(bool)> on_connected;
};

class shard {
public:
  shard(boost::asio::any_io_executor ex, shard_settings settings, session_state initial, shard_callbacks callbacks);
  ~shard();
  shard(const shard&) = delete;
  shard& operator=(const shard&) = delete;

  // Runs until stop() or a fatal close.
  void start();
  // Closes the connection with 4000 (the session stays resumable, by this process or
  // another) and ends the loop.
  void stop();
  // Sends a gateway command (presence updates) when connected; false when not.
  bool send_command(std::string json);

  bool connected() const;
  const session_state& session() const;
  std::optional<std::string> fatal_error() const;
  // Drops the connection without a close frame (tests: a network failure).
  void drop_connection();

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::platform::discord
