#pragma once
// Keys kept per channel by the layers above the platforms (the worker's channel state, the
// notes tool), named here, below both, so that what owns a channel can remove them with it:
// deleting a Redis-platform instance deletes its channel's keys, and an instance created
// again under the same id starts clean.

#include <array>
#include <string>
#include <string_view>
#include <vector>

namespace stargazer::platform {

// sg:channel:{platform}:{channel}:{field}: the worker's state of the channel
// (worker/channel_state.hpp says what each field holds).
inline std::string channel_state_key(std::string_view platform, std::string_view channel_id, std::string_view field) {
  return "sg:channel:" + std::string(platform) + ":" + std::string(channel_id) + ":" + std::string(field);
}
inline constexpr std::array<std::string_view, 5> channel_state_fields{"mode", "quiet", "forgotten", "cooldown",
                                                                      "backfilled"};

// sg:notes:{platform}:{channel}: the notes tool's hash (tools/builtin.hpp).
inline std::string notes_key(std::string_view platform, std::string_view channel_id) {
  return "sg:notes:" + std::string(platform) + ":" + std::string(channel_id);
}

// Every such key of one channel.
inline std::vector<std::string> channel_owned_keys(std::string_view platform, std::string_view channel_id) {
  std::vector<std::string> keys{notes_key(platform, channel_id)};
  for (const auto field : channel_state_fields) keys.push_back(channel_state_key(platform, channel_id, field));
  return keys;
}

}  // namespace stargazer::platform
