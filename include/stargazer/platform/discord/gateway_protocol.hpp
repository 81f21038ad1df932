#pragma once
// The Discord gateway's wire format (Gateway API v10, JSON encoding; docs/discord.md):
// zlib-stream transport compression, payload decoding, the commands a shard sends, and
// what a close code means. Pure: the shard connection (gateway.cpp) does the I/O.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace stargazer::platform::discord {

enum class opcode : int {
  dispatch = 0,
  heartbeat = 1,
  identify = 2,
  presence_update = 3,
  resume = 6,
  reconnect = 7,
  invalid_session = 9,
  hello = 10,
  heartbeat_ack = 11,
};

// Gateway intents (bit flags).
namespace intent {
inline constexpr std::uint32_t guilds = 1u << 0;
inline constexpr std::uint32_t guild_messages = 1u << 9;
inline constexpr std::uint32_t guild_message_reactions = 1u << 10;
inline constexpr std::uint32_t direct_messages = 1u << 12;
inline constexpr std::uint32_t direct_message_reactions = 1u << 13;
inline constexpr std::uint32_t message_content = 1u << 15;
}  // namespace intent
inline constexpr std::uint32_t default_intents = intent::guilds | intent::guild_messages | intent::message_content |
                                                 intent::direct_messages | intent::guild_message_reactions;

// "guilds,guild_messages,..." or a number → the intents bit set; nullopt names nothing known.
std::optional<std::uint32_t> parse_intents(std::string_view text, std::string* error = nullptr);

// zlib-stream: the whole connection is one zlib stream; each message ends with a
// Z_SYNC_FLUSH (the bytes 00 00 ff ff) and may span several WebSocket frames.
class zlib_stream {
public:
  explicit zlib_stream(std::size_t max_message_bytes = 4 * 1024 * 1024);
  ~zlib_stream();
  zlib_stream(const zlib_stream&) = delete;
  zlib_stream& operator=(const zlib_stream&) = delete;

  struct incomplete {};
  struct failure {
    std::string reason;
  };
  // A frame's bytes: the message they complete, `incomplete` until the flush suffix, or a
  // failure (corrupt data, or a message over the limit). After a failure the stream is
  // unusable: the connection must be dropped.
  std::variant<incomplete, std::string, failure> feed(std::string_view frame);

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// One decoded gateway payload.
struct payload {
  int op = -1;
  std::optional<std::int64_t> seq;  // "s": dispatches only
  std::string type;                 // "t": dispatches only
  std::string data_json;            // "d" as JSON text ("null" when absent)
};

// The error names what is wrong (not JSON, too deep, no integer "op", ...).
std::variant<payload, std::string> parse_payload(std::string_view text, std::size_t max_bytes = 4 * 1024 * 1024);

// Commands a shard sends.
std::string heartbeat_command(std::optional<std::int64_t> seq);
std::string identify_command(std::string_view token, std::uint32_t intents, int shard_id, int shard_count,
                             std::string_view presence_text = {});
std::string resume_command(std::string_view token, std::string_view session_id, std::int64_t seq);
// A custom status ("🙂 text"); empty text clears it.
std::string presence_command(std::string_view text, std::string_view emoji);

// What a shard does after the gateway closed its connection with `code`.
enum class close_action {
  resume,      // reconnect and resume the session
  reidentify,  // reconnect with a new session (the old one is invalid)
  fatal,       // stop the shard: the configuration is wrong (4004, 4010-4014)
};
close_action after_close(int code);
// A short description of a close code ("authentication failed (4004): the token is wrong").
std::string describe_close(int code);

// The URL to connect to: `base` (from GET /gateway/bot or a resume URL) with the version,
// encoding and compression query.
std::string gateway_connect_url(std::string_view base, bool zlib);

// The shard a guild's events arrive on ((guild_id >> 22) % shard_count); DMs: shard 0.
int shard_of(std::string_view guild_id, int shard_count);

}  // namespace stargazer::platform::discord
