#pragma once
// What workers share about channels, kept in Redis so every worker (and the one that
// takes over after a crash) sees the same (docs/architecture.md, "Group chats"):
//
//   sg:channel:{platform}:{channel}:mode        reply policy set by !mode (no expiry)
//   sg:channel:{platform}:{channel}:quiet       unix time the quiet ends; EX: its length
//   sg:channel:{platform}:{channel}:forgotten   unix time of the last !forget (90 days, as the cache)
//   sg:channel:{platform}:{channel}:cooldown    present while an unprompted reply cools down; EX
//   sg:channel:{platform}:{channel}:backfilled  unix time of the backfill; SET NX, EX 7 days
//   sg:heartbeat:channels                       zset "{platform}:{channel}" → the bot's last send there
//   sg:heartbeat:last:{platform}:{channel}      unix time of the last heartbeat visit; SET NX, EX ~interval
//   sg:heartbeat:round                          hash started/finished of the current round; EX interval
//
// Threading: on the connection's executor, as the connection.

#include "stargazer/core/result.hpp"
#include "stargazer/platform/identity.hpp"
#include "stargazer/worker/group_chat_rules.hpp"

#include <utility>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace stargazer::redis {
class connection;
}

namespace stargazer::worker {

struct channel_ref {
  std::string platform;
  std::string channel_id;
};

// Where a heartbeat round stands.
struct heartbeat_round {
  bool exists = false;    // started within the interval
  bool finished = false;  // every channel was visited or skipped
};

class channel_state {
public:
  static constexpr std::string_view heartbeat_channels_key = "sg:heartbeat:channels";
  static constexpr std::string_view heartbeat_round_key = "sg:heartbeat:round";

  // `conn` must outlive this object.
  explicit channel_state(redis::connection& conn);

  static std::string key(std::string_view platform, std::string_view channel_id, std::string_view what);
  static std::string heartbeat_visit_key(std::string_view platform, std::string_view channel_id);

  // The channel's mode, quiet, cooldown and forget marker: one MGET.
  boost::asio::awaitable<result<channel_gate>> gate(const std::string& platform, const std::string& channel_id);

  // What a turn reads before it decides anything: the gate, and the person the sender's
  // account is linked to (`stargazer identity link`; none asked for when `sender_id` is
  // empty), in the same MGET.
  struct turn_reads {
    channel_gate gate;
    std::string sender_unified_id;  // empty: not linked
  };
  boost::asio::awaitable<result<turn_reads>> read_for_turn(const std::string& platform, const std::string& channel_id,
                                                           const std::string& sender_id);
  // The accounts of a linked person (one SMEMBERS); nullopt when the person is gone.
  boost::asio::awaitable<result<std::optional<platform::unified_identity>>> person(const std::string& unified_id);

  boost::asio::awaitable<std::error_code> set_mode(const std::string& platform, const std::string& channel_id,
                                                   reply_policy mode);
  // Quiet until now + `length`; zero lifts it.
  boost::asio::awaitable<std::error_code> set_quiet(const std::string& platform, const std::string& channel_id,
                                                    std::chrono::seconds length, double now);
  // Messages at or before `before` (unix seconds) are set aside for the model.
  boost::asio::awaitable<std::error_code> forget(const std::string& platform, const std::string& channel_id,
                                                 double before);
  // No unprompted reply in the channel for `length` (zero: nothing to do).
  boost::asio::awaitable<std::error_code> start_cooldown(const std::string& platform,
                                                         const std::string& channel_id,
                                                         std::chrono::seconds length);

  // Messages in the channel's cache index.
  boost::asio::awaitable<result<long long>> cached_messages(const std::string& platform,
                                                            const std::string& channel_id);
  // True when this call took the channel's one backfill (SET NX EX `ttl`).
  boost::asio::awaitable<result<bool>> claim_backfill(const std::string& platform, const std::string& channel_id,
                                                      std::chrono::seconds ttl, double now);

  // The bot sent something in the channel: the heartbeat will look in on it.
  boost::asio::awaitable<std::error_code> note_bot_spoke(const std::string& platform,
                                                         const std::string& channel_id, double now);
  // Channels the bot has spoken in within `within`, least recently first (at most `limit`);
  // older ones are dropped from the set.
  boost::asio::awaitable<result<std::vector<channel_ref>>> heartbeat_channels(double now,
                                                                              std::chrono::seconds within,
                                                                              std::size_t limit);
  // Whether the channel was visited within its marker's life (a cheap check before the RPC).
  boost::asio::awaitable<result<bool>> visited(const std::string& platform, const std::string& channel_id);
  // True when this call took the channel's visit for this interval (SET NX EX `ttl`),
  // written before the turn: a crash mid-turn never visits it twice.
  boost::asio::awaitable<result<bool>> claim_heartbeat_visit(const std::string& platform,
                                                             const std::string& channel_id,
                                                             std::chrono::seconds ttl, double now);

  // The current round; begin_round creates it (HSETNX + EXPIRE) when there is none and
  // says whether it did; finish_round marks it done.
  boost::asio::awaitable<result<heartbeat_round>> round();
  boost::asio::awaitable<result<bool>> begin_round(std::chrono::seconds interval, double now);
  boost::asio::awaitable<std::error_code> finish_round(double now);

private:
  boost::asio::awaitable<std::error_code> run(std::vector<std::vector<std::string>> commands);
  redis::connection& conn_;
};

}  // namespace stargazer::worker
