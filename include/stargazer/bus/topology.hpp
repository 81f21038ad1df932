#pragma once
// Stream and group names (docs/protocol.md §1), overridable by environment variables
// shared by every role: SG_INBOUND_STREAM, SG_OUTBOUND_STREAM_PREFIX, SG_WORKER_GROUP,
// SG_GATEWAY_GROUP_PREFIX, SG_TOOLS_STREAM, SG_TOOLS_GROUP, SG_TOOLS_REPLY_STREAM_PREFIX.

#include <chrono>
#include <string>
#include <string_view>

namespace stargazer::bus {

struct topology {
  std::string inbound_stream = "sg:stream:inbound";
  std::string outbound_stream_prefix = "sg:stream:outbound";
  std::string worker_group = "sg:workers";
  std::string gateway_group_prefix = "sg:gateway";
  std::string tools_stream = "sg:stream:tools";
  std::string tools_group = "sg:tools";
  std::string tools_reply_stream_prefix = "sg:tools:reply";

  // The defaults above overridden by whichever SG_* variables are set.
  static topology from_environment();

  std::string outbound_stream(std::string_view platform) const { return outbound_stream_prefix + ":" + std::string(platform); }
  std::string gateway_group(std::string_view platform) const { return gateway_group_prefix + ":" + std::string(platform); }
  std::string tools_reply_stream(std::string_view worker_id) const {
    return tools_reply_stream_prefix + ":" + std::string(worker_id);
  }
};

// Derived key names (docs/protocol.md §4, §6).
inline std::string dead_letter_stream(std::string_view stream) { return std::string(stream) + ":dlq"; }
inline std::string attempts_key(std::string_view stream) { return std::string(stream) + ":attempts"; }
// A sorted set (docs/protocol.md §4.6): `next` the last sequence given out, `done` the
// highest finished, `gap:{seq}` a predecessor its successor stopped waiting for. Scores
// let one `ZADD ... GT` advance `done` without reading it first.
inline std::string order_key(std::string_view stream, std::string_view okey) {
  return "sg:seq:" + std::string(stream) + ":" + std::string(okey);
}
// An order set's TTL, refreshed as its channel publishes.
inline constexpr std::chrono::seconds order_set_ttl{604800};

}  // namespace stargazer::bus
