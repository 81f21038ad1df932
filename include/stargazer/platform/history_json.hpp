#pragma once
// The JSON form of fetched channel history in the fetch_channel_history RPC reply
// (docs/protocol.md §3.4): written by the gateway, read by the worker's proxy adapter.

#include "stargazer/platform/platform_adapter.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stargazer::platform {

std::string history_to_json(const std::vector<history_message>& messages);
// nullopt when `json` is not an array of history objects; missing fields are empty.
std::optional<std::vector<history_message>> history_from_json(std::string_view json);

}  // namespace stargazer::platform
