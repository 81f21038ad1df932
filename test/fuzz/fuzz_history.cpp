// Channel history in an RPC reply (platform/history_json.hpp): any JSON parses or is
// refused without crashing; what parses writes back to JSON that reads the same, except
// that a timestamp may move by an ulp (RapidJSON's default number parsing; its exact mode
// reads out of bounds in 1.1.0).

#include "stargazer/platform/history_json.hpp"

#include "fuzz_check.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace stargazer::platform;
  const auto messages = history_from_json(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!messages) return 0;
  const auto json = history_to_json(*messages);
  const auto again = history_from_json(json);
  FUZZ_CHECK(again.has_value() && again->size() == messages->size());
  for (std::size_t i = 0; i < messages->size(); ++i) {
    const auto &a = (*messages)[i], &b = (*again)[i];
    FUZZ_CHECK(a.user_id == b.user_id && a.user_name == b.user_name && a.text == b.text);
    FUZZ_CHECK(a.message_id == b.message_id && a.is_bot == b.is_bot && a.reply_to_id == b.reply_to_id);
    FUZZ_CHECK(a.reactions == b.reactions);
    FUZZ_CHECK(std::fabs(a.timestamp - b.timestamp) <= std::fabs(a.timestamp) * 1e-15);
  }
  return 0;
}
