// REST request bodies of the Redis platform API (platform/redis/redis_platform_api_bodies.hpp):
// any body gives the parsed values or a 4xx JSON error, never a crash.

#include "stargazer/platform/redis/redis_platform_api_bodies.hpp"

#include "fuzz_check.hpp"

#include <cstddef>
#include <cstdint>
#include <variant>

namespace {

using namespace stargazer;

template <class T>
void check(const std::variant<T, http::response>& result) {
  if (const auto* r = std::get_if<http::response>(&result)) {
    FUZZ_CHECK(r->status >= 400 && r->status < 500);
    FUZZ_CHECK(!r->body.empty());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  http::request req;
  req.verb = http::method::post;
  req.headers.emplace_back("content-type", "application/json");
  req.body.assign(reinterpret_cast<const char*>(data), size);
  // Small limits, so short inputs reach the size checks.
  const platform::redis_platform_api_settings settings{.max_text_bytes = 64,
                                                       .max_attachments = 3,
                                                       .max_attachment_bytes = 48,
                                                       .max_name_bytes = 16,
                                                       .max_metadata_fields = 4,
                                                       .max_metadata_value_bytes = 16};
  check(platform::parse_create_instance_body(req, settings));
  check(platform::parse_update_instance_body(req, settings));
  check(platform::parse_register_user_body(req, settings));
  const auto injected = platform::parse_inject_body(req, settings);
  check(injected);
  if (const auto* in = std::get_if<platform::inject_request>(&injected)) {
    FUZZ_CHECK(in->text.size() <= settings.max_text_bytes);
    FUZZ_CHECK(in->attachments.size() <= settings.max_attachments);
    for (const auto& a : in->attachments) FUZZ_CHECK(a.data.size() <= settings.max_attachment_bytes);
  }
  return 0;
}
