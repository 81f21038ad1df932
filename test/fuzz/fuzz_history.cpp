// Channel history in an RPC reply (platform/history_json.hpp): any JSON parses or is
// refused without crashing; what parses writes back to JSON that reads the same.

#include "stargazer/platform/history_json.hpp"

#include "fuzz_check.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace stargazer::platform;
  const auto messages = history_from_json(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!messages) return 0;
  const auto json = history_to_json(*messages);
  const auto again = history_from_json(json);
  FUZZ_CHECK(again.has_value());
  FUZZ_CHECK(history_to_json(*again) == json);
  return 0;
}
