#include "stargazer/redis/url.hpp"

#include <catch2/catch.hpp>

using namespace stargazer::redis;

TEST_CASE("redis URLs parse into addresses", "[url]") {
  SECTION("plain tcp with defaults") {
    auto a = parse_url("redis://localhost");
    REQUIRE(a);
    CHECK(a->kind == transport::tcp);
    CHECK(a->host == "localhost");
    CHECK(a->port == 6379);
    CHECK(a->database == 0);
    CHECK(a->password.empty());
  }
  SECTION("user, password, port and db") {
    auto a = parse_url("redis://alice:s%40cret@10.0.0.2:6380/3");
    REQUIRE(a);
    CHECK(a->username == "alice");
    CHECK(a->password == "s@cret");
    CHECK(a->host == "10.0.0.2");
    CHECK(a->port == 6380);
    CHECK(a->database == 3);
  }
  SECTION("password only") {
    auto a = parse_url("redis://:pw@h");
    REQUIRE(a);
    CHECK(a->username.empty());
    CHECK(a->password == "pw");
    auto b = parse_url("redis://pw@h");
    REQUIRE(b);
    CHECK(b->password == "pw");
  }
  SECTION("tls and ipv6") {
    auto a = parse_url("rediss://[::1]:7000");
    REQUIRE(a);
    CHECK(a->kind == transport::tls);
    CHECK(a->host == "::1");
    CHECK(a->port == 7000);
    CHECK(describe(*a) == "tls:[::1]:7000");
  }
  SECTION("unix socket with db") {
    auto a = parse_url("unix:///tmp/r.sock?db=2");
    REQUIRE(a);
    CHECK(a->kind == transport::unix_socket);
    CHECK(a->path == "/tmp/r.sock");
    CHECK(a->database == 2);
  }
}

TEST_CASE("bad redis URLs are refused with a reason", "[url]") {
  std::string error;
  CHECK_FALSE(parse_url("http://x", &error));
  CHECK(error.find("scheme") != std::string::npos);
  CHECK_FALSE(parse_url("redis://h:99999", &error));
  CHECK(error.find("port") != std::string::npos);
  CHECK_FALSE(parse_url("redis://h/abc", &error));
  CHECK(error.find("database") != std::string::npos);
  CHECK_FALSE(parse_url("unix://relative.sock", &error));
  CHECK_FALSE(parse_url("localhost:6379", &error));
  CHECK_FALSE(parse_url("redis://u:%zz@h", &error));
  CHECK_FALSE(parse_url("redis://h?bogus=1", &error));
}

TEST_CASE("passwords are redacted", "[url]") {
  CHECK(redact_url("redis://alice:secret@h:1/0") == "redis://alice:***@h:1/0");
  CHECK(redact_url("redis://secret@h") == "redis://***@h");
  CHECK(redact_url("redis://h:1") == "redis://h:1");
}
