// http::client's pure parts: base URLs and Retry-After.

#include "stargazer/http/client.hpp"

#include <catch2/catch.hpp>

using namespace stargazer;
using namespace std::chrono_literals;

TEST_CASE("parse_base_url: schemes, default ports, paths, IPv6", "[http_client]") {
  auto u = http::parse_base_url("https://openrouter.ai/api/v1");
  REQUIRE(u);
  CHECK(u->tls);
  CHECK(u->host == "openrouter.ai");
  CHECK(u->port == 443);
  CHECK(u->path_prefix == "/api/v1");
  CHECK(u->authority() == "openrouter.ai");
  CHECK(u->to_string() == "https://openrouter.ai/api/v1");

  u = http::parse_base_url("http://127.0.0.1:11434/v1/");
  REQUIRE(u);
  CHECK_FALSE(u->tls);
  CHECK(u->port == 11434);
  CHECK(u->path_prefix == "/v1");
  CHECK(u->authority() == "127.0.0.1:11434");

  u = http::parse_base_url("HTTP://[::1]:8080");
  REQUIRE(u);
  CHECK(u->host == "::1");
  CHECK(u->port == 8080);
  CHECK(u->path_prefix.empty());
  CHECK(u->authority() == "[::1]:8080");

  u = http::parse_base_url("http://[fe80::1]/x");
  REQUIRE(u);
  CHECK(u->port == 80);
  CHECK(u->authority() == "[fe80::1]");
}

TEST_CASE("parse_base_url: what it refuses, and why", "[http_client]") {
  for (const char* bad : {"openrouter.ai/api", "ftp://x", "http://", "http://:80", "http://h:", "http://h:0",
                          "http://h:70000", "http://h:8x", "http://[::1", "http://[nope]", "http://::1/",
                          "http://u:p@h/", "http://h/?q=1", "http://h/#f", "http://[::1]x"}) {
    std::string error;
    INFO(bad);
    CHECK_FALSE(http::parse_base_url(bad, &error));
    CHECK_FALSE(error.empty());
  }
}

TEST_CASE("parse_retry_after: seconds and the three HTTP-date forms", "[http_client]") {
  // Sun, 06 Nov 1994 08:49:37 GMT
  const auto date = std::chrono::sys_days{std::chrono::year{1994} / 11 / 6} + 8h + 49min + 37s;
  const auto now = date - 30s;
  CHECK(http::parse_retry_after("120", now) == 120'000ms);
  CHECK(http::parse_retry_after(" 0 ", now) == 0ms);
  CHECK(http::parse_retry_after("99999999999999999999999", now) == std::chrono::seconds(1'000'000'000));
  CHECK(http::parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now) == 30'000ms);
  CHECK(http::parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now) == 30'000ms);
  CHECK(http::parse_retry_after("Sun Nov  6 08:49:37 1994", now) == 30'000ms);
  CHECK(http::parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", date + 1h) == 0ms);  // past: at once
  for (const char* bad : {"", "-1", "1.5", "soon", "Sun, 31 Feb 1994 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT",
                          "Sun, 06 Nov 1994 08:49:37 GMT trailing", "Sun, 06 Nov 1994 25:49:37 GMT"}) {
    INFO(bad);
    CHECK_FALSE(http::parse_retry_after(bad, now));
  }
}
