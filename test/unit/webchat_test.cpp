// The web chat's pure rules: room ids, user ids, display names, the origin policy.

#include "stargazer/platform/webchat/webchat_platform.hpp"

#include <catch2/catch.hpp>

using namespace stargazer::platform;

TEST_CASE("room ids are short lowercase slugs", "[webchat]") {
  for (const char* ok : {"lobby", "a", "0", "team-7", "x_y", "abcdefghijklmnopqrstuvwxyz012345"}) {
    INFO(ok);
    CHECK(valid_room_id(ok, 32));
  }
  for (const char* bad : {"", "Lobby", "-lobby", "_x", "a b", "a/b", "a.b", "ä",
                          "abcdefghijklmnopqrstuvwxyz0123456", "..", "a\n"}) {
    INFO(bad);
    CHECK_FALSE(valid_room_id(bad, 32));
  }
}

TEST_CASE("user ids are 8 to 64 URL-safe characters", "[webchat]") {
  CHECK(valid_webchat_user_id("0123456789abcdef0123456789abcdef"));
  CHECK(valid_webchat_user_id("Ab-_0000"));
  CHECK_FALSE(valid_webchat_user_id("short"));
  CHECK_FALSE(valid_webchat_user_id(std::string(65, 'a')));
  CHECK_FALSE(valid_webchat_user_id("has space here"));
  CHECK_FALSE(valid_webchat_user_id("semi;colon;"));
}

TEST_CASE("display names are trimmed, bounded and free of control characters", "[webchat]") {
  CHECK(normalized_display_name("  Ada Lovelace\t", 64) == std::optional<std::string>("Ada Lovelace"));
  CHECK(normalized_display_name("Zoë 🌟", 64) == std::optional<std::string>("Zoë 🌟"));
  CHECK_FALSE(normalized_display_name("   ", 64));
  CHECK_FALSE(normalized_display_name("", 64));
  CHECK_FALSE(normalized_display_name("new\nline", 64));
  CHECK_FALSE(normalized_display_name(std::string("nul\0x", 5), 64));
  CHECK_FALSE(normalized_display_name(std::string(65, 'n'), 64));
  CHECK(normalized_display_name(std::string(64, 'n'), 64));
}

TEST_CASE("the WebSocket origin policy: same origin, listed origins, or no Origin at all", "[webchat]") {
  const std::vector<std::string> none;
  CHECK(webchat_origin_allowed(std::nullopt, "127.0.0.1:8080", none));  // not a browser
  CHECK(webchat_origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080", none));
  CHECK(webchat_origin_allowed("https://Chat.Example.com", "chat.example.com", none));
  CHECK_FALSE(webchat_origin_allowed("http://127.0.0.1:8081", "127.0.0.1:8080", none));
  CHECK_FALSE(webchat_origin_allowed("http://evil.example", "127.0.0.1:8080", none));
  CHECK_FALSE(webchat_origin_allowed("null", "127.0.0.1:8080", none));
  CHECK_FALSE(webchat_origin_allowed("http://127.0.0.1:8080.evil.example", "127.0.0.1:8080", none));
  CHECK_FALSE(webchat_origin_allowed("ftp://127.0.0.1:8080", "127.0.0.1:8080", none));
  CHECK_FALSE(webchat_origin_allowed("http://x", std::nullopt, none));

  const std::vector<std::string> listed{"https://app.example.com"};
  CHECK(webchat_origin_allowed("https://app.example.com", "127.0.0.1:8080", listed));
  CHECK(webchat_origin_allowed("HTTPS://APP.EXAMPLE.COM", "127.0.0.1:8080", listed));
  CHECK_FALSE(webchat_origin_allowed("http://app.example.com", "127.0.0.1:8080", listed));
  const std::vector<std::string> any{"*"};
  CHECK(webchat_origin_allowed("http://anything.example", "127.0.0.1:8080", any));
}
