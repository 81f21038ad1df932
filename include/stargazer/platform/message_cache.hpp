#pragma once
// The message cache (docs/protocol.md §5.5): every inbound and
// outbound message of a channel, as a hash `sg:msg:{platform}:{channel}:{message_id}`
// (or the outbound message key) with a 90-day expiry, indexed by timestamp in the sorted
// set `channel_msgs:{platform}:{channel_id}`. Gateways write it as they deliver, the
// worker writes what it receives, the REST API and the model's context read it. Writes
// are idempotent: the same message stored twice is one entry.

#include "stargazer/core/result.hpp"

#include <utility>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace stargazer::redis {
class connection;
}

namespace stargazer::platform {

struct cached_message {
  std::string message_id;
  std::string user_id;
  std::string user_name;
  std::string text;
  double timestamp = 0;  // unix seconds
  bool is_bot = false;
  std::string reply_to_id;
};

class message_cache {
public:
  static constexpr std::chrono::seconds ttl{7776000};  // 90 days

  // With `memo_capacity` > 0 the messages this object has stored or read are remembered
  // (least recently used dropped first): a turn's history read then fetches only the
  // hashes it has not seen, usually the newest one or two, instead of every message of
  // the context. Stored hashes are written once, so a remembered one stays true.
  explicit message_cache(redis::connection& conn, std::size_t memo_capacity = 0);
  ~message_cache();
  message_cache(const message_cache&) = delete;
  message_cache& operator=(const message_cache&) = delete;

  // How many messages each channel keeps (--history-keep): storing one more deletes the
  // oldest hash and its index entry, so retained memory is bounded by channels x this, not
  // by traffic x the 90-day ttl. 0 keeps everything until it expires. Process-wide, set once
  // at start, before anything is stored.
  static void keep_per_channel(std::size_t messages);
  static std::size_t kept_per_channel();

  static std::string channel_key(std::string_view platform, std::string_view channel_id);
  static std::string message_key(std::string_view platform, std::string_view channel_id, std::string_view message_id);

  // The commands that store `m` under `hash_key` (message_key(...) when empty), for
  // callers that put them in a MULTI with their own and send them on `conn` (whose
  // expiry memo decides whether the channel's index has its TTL refreshed).
  static std::vector<std::vector<std::string>> store_commands(redis::connection& conn, std::string_view platform,
                                                              std::string_view channel_id, const cached_message& m,
                                                              std::string hash_key = {});

  // For platform scripts that store a message with more in one script: the Lua source of
  // `local function store_message(first)`, which writes KEYS[1] (the hash) and KEYS[2] (the
  // channel index) from ARGV[first..]; prepare_store gives those keys and arguments.
  struct store_write {
    // Positions in `args` (the script's ARGV from `first`).
    enum arg : std::size_t { hash_ttl, score, index_ttl, keep, first_field };
    std::vector<std::string> keys;  // the hash, the channel index
    std::vector<std::string> args;
  };
  static store_write prepare_store(redis::connection& conn, std::string_view platform, std::string_view channel_id,
                                   const cached_message& m, std::string hash_key = {});
  static std::string_view store_lua();

  boost::asio::awaitable<std::error_code> store(const std::string& platform, const std::string& channel_id,
                                                const cached_message& m, std::string hash_key = {});

  // An edit of a stored message (a Matrix m.replace) by its author: the text the history
  // shows becomes `text`. The edited copy is a new hash under `edit_id` that takes the
  // original's place in the channel's index, so hashes stay written once and a memo never
  // shows the old text. false when the original is not stored (expired, or its turn has not
  // stored it yet) or was written by somebody else.
  boost::asio::awaitable<result<bool>> edit(const std::string& platform, const std::string& channel_id,
                                            const std::string& message_id, const std::string& author_id,
                                            const std::string& edit_id, const std::string& text);

  // Newest first, at most `limit`, strictly older than `before` when given; expired
  // entries are skipped.
  boost::asio::awaitable<result<std::vector<cached_message>>> recent(const std::string& platform,
                                                                     const std::string& channel_id, std::size_t limit,
                                                                     std::optional<double> before = std::nullopt);

private:
  boost::asio::awaitable<result<std::vector<cached_message>>> recent_remembered(const std::string& index_key,
                                                                                std::size_t limit,
                                                                                const std::string& max_score);
  struct memo;
  redis::connection& conn_;
  std::unique_ptr<memo> memo_;
};

}  // namespace stargazer::platform
