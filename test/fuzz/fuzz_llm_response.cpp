// JSON from an untrusted model server (llm/openai_client.hpp pure functions):
// parse_response and error_excerpt take any body; encode_request turns any text into a
// request that is valid JSON carrying the text.

#include "stargazer/llm/openai_client.hpp"

#include "fuzz_check.hpp"

#include <rapidjson/document.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

using namespace stargazer::llm;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  (void)parse_response(body);

  const auto excerpt = error_excerpt(body, "sk-secret", 300);
  FUZZ_CHECK(excerpt.size() <= 303);
  FUZZ_CHECK(excerpt.find("sk-secret") == std::string::npos);

  const auto name = participant_name(body);
  FUZZ_CHECK(name.size() <= 64);

  request req;
  req.messages.push_back({role::user, std::string(body), std::string(body)});
  const auto encoded = encode_request(req, openai_settings{});
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(encoded.data(), encoded.size());
  FUZZ_CHECK(!doc.HasParseError());
  return 0;
}
