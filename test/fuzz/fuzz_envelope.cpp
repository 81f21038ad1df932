// Envelopes from Redis streams (bus/envelope.hpp): any bytes decode to a value or a
// decode_failure, never a crash; what decodes re-encodes to bytes that decode again and
// encode to the same bytes (the codec is stable after one round trip).

#include "stargazer/bus/envelope.hpp"

#include "fuzz_check.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace {

using namespace stargazer::bus;

template <class T, class Decode>
void round_trip(std::string_view bytes, Decode decode) {
  auto first = decode(bytes);
  auto* value = std::get_if<T>(&first);
  if (value == nullptr) return;
  const auto encoded = encode(*value);
  auto second = decode(encoded);
  FUZZ_CHECK(std::holds_alternative<T>(second));
  FUZZ_CHECK(encode(std::get<T>(second)) == encoded);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  round_trip<inbound_envelope>(bytes, decode_inbound);
  round_trip<outbound_envelope>(bytes, decode_outbound);
  round_trip<tool_request>(bytes, decode_tool_request);
  round_trip<tool_reply>(bytes, decode_tool_reply);
  return 0;
}
