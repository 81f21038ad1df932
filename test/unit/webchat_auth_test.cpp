// Web chat sign-in without I/O (platform/webchat/webchat_auth_rules.hpp): durations,
// cookies, HTTPS detection, links; and the --webchat-auth rules of the command line.

#include "roles/options.hpp"
#include "stargazer/http/message.hpp"
#include "stargazer/platform/webchat/webchat_auth_rules.hpp"

#include <catch2/catch.hpp>

#include <sstream>

using namespace stargazer;
using namespace stargazer::platform;
using namespace std::chrono_literals;

namespace {

http::request request_with(std::vector<std::pair<std::string, std::string>> headers, bool via_proxy = false) {
  http::request r;
  r.headers = std::move(headers);
  r.via_trusted_proxy = via_proxy;
  return r;
}

// Parses a command line: the configuration, or the exit status when parsing ended.
std::variant<config, int> parse(std::vector<std::string> args) {
  std::vector<const char*> argv{"stargazer"};
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  auto r = parse_command_line(static_cast<int>(argv.size()), argv.data(), out, err);
  if (auto* exit = std::get_if<parse_exit>(&r)) return exit->status;
  return std::get<parsed_command>(std::move(r)).cfg;
}

}  // namespace

TEST_CASE("invite durations: units, bounds, garbage", "[webchat][auth]") {
  const auto year = std::chrono::seconds(365 * 86400);
  CHECK(parse_webchat_duration("90", year) == 90s);
  CHECK(parse_webchat_duration("90s", year) == 90s);
  CHECK(parse_webchat_duration("30m", year) == 1800s);
  CHECK(parse_webchat_duration("12h", year) == 43200s);
  CHECK(parse_webchat_duration("7d", year) == std::chrono::seconds(7 * 86400));
  CHECK(parse_webchat_duration("2w", year) == std::chrono::seconds(14 * 86400));
  CHECK(parse_webchat_duration("365d", year) == year);
  for (const auto* bad : {"", "0", "0d", "-1d", "366d", "7 d", "d", "7x", "1.5h", "99999999999999d", "7dd"}) {
    INFO(bad);
    CHECK_FALSE(parse_webchat_duration(bad, year));
  }
}

TEST_CASE("tokens, public ids and invited user ids have fixed shapes", "[webchat][auth]") {
  CHECK(valid_webchat_token(std::string(64, 'a')));
  CHECK_FALSE(valid_webchat_token(std::string(63, 'a')));
  CHECK_FALSE(valid_webchat_token(std::string(64, 'A')));
  CHECK_FALSE(valid_webchat_token(std::string(64, 'g')));
  CHECK(webchat_public_id(std::string(64, 'f')) == std::string(16, 'f'));
  CHECK(valid_webchat_public_id("0123456789abcdef"));
  CHECK_FALSE(valid_webchat_public_id("0123456789abcde"));
  CHECK_FALSE(valid_webchat_public_id("0123456789abcdeX"));
  const auto id = invited_user_id("Ada");
  CHECK(id.size() == 28);
  CHECK(id.rfind("inv-", 0) == 0);
  CHECK(id == invited_user_id("Ada"));
  CHECK(id != invited_user_id("ada"));
  CHECK(split_rooms("lobby,,dev") == std::vector<std::string>{"lobby", "dev"});
  CHECK(split_rooms("").empty());
  CHECK(join_rooms({"lobby", "dev"}) == "lobby,dev");
  webchat_identity who;
  CHECK(who.may_use_room("anything"));
  who.rooms = {"dev"};
  CHECK(who.may_use_room("dev"));
  CHECK_FALSE(who.may_use_room("lobby"));
}

TEST_CASE("the session cookie's attributes and the Cookie header", "[webchat][auth]") {
  CHECK(webchat_session_cookie_header("abc", 60s, false) ==
        "sg_webchat_session=abc; Path=/webchat; Max-Age=60; HttpOnly; SameSite=Strict");
  CHECK(webchat_session_cookie_header("abc", 60s, true) ==
        "sg_webchat_session=abc; Path=/webchat; Max-Age=60; HttpOnly; SameSite=Strict; Secure");
  CHECK(webchat_cleared_cookie_header(false).find("Max-Age=0") != std::string::npos);

  const auto r = request_with({{"cookie", "theme=dark; sg_webchat_session=tok1 ; other=x"},
                               {"cookie", "sg_webchat_session=tok2"}});
  CHECK(r.cookie("sg_webchat_session") == std::optional<std::string_view>("tok1"));
  CHECK(r.cookie("theme") == std::optional<std::string_view>("dark"));
  CHECK_FALSE(r.cookie("webchat_session"));
  CHECK_FALSE(request_with({}).cookie("sg_webchat_session"));
  CHECK(request_with({{"cookie", "a=\"quoted\""}}).cookie("a") == std::optional<std::string_view>("quoted"));
}

TEST_CASE("HTTPS is believed from --public-url or a trusted proxy, never from a client", "[webchat][auth]") {
  CHECK(webchat_request_is_https(request_with({}), "https://chat.example.com"));
  CHECK(webchat_request_is_https(request_with({}), "HTTPS://chat.example.com"));
  CHECK_FALSE(webchat_request_is_https(request_with({}), "http://chat.example.com"));
  CHECK_FALSE(webchat_request_is_https(request_with({{"x-forwarded-proto", "https"}}), ""));
  CHECK(webchat_request_is_https(request_with({{"x-forwarded-proto", "https"}}, true), ""));
  CHECK(webchat_request_is_https(request_with({{"x-forwarded-proto", " https , http"}}, true), ""));
  CHECK_FALSE(webchat_request_is_https(request_with({{"x-forwarded-proto", "http, https"}}, true), ""));

  CHECK(webchat_link_base(request_with({{"host", "127.0.0.1:8080"}}), "") == "http://127.0.0.1:8080");
  CHECK(webchat_link_base(request_with({{"host", "chat.example.com"}, {"x-forwarded-proto", "https"}}, true), "") ==
        "https://chat.example.com");
  CHECK(webchat_link_base(request_with({{"host", "internal:8080"}}), "https://chat.example.com/") ==
        "https://chat.example.com");
}

TEST_CASE("the --webchat-auth flag: invite by default off loopback, none refused there", "[webchat][auth][config]") {
  const auto loopback = parse({});
  REQUIRE(std::holds_alternative<config>(loopback));
  CHECK(std::get<config>(loopback).effective_webchat_auth() == "none");
  for (const auto* host : {"127.0.0.1", "127.0.1.1", "::1", "localhost"}) {
    INFO(host);
    const auto c = parse({"--http-host", host, "--webchat-auth", "none"});
    REQUIRE(std::holds_alternative<config>(c));
  }
  for (const auto* host : {"0.0.0.0", "::", "10.0.0.5", "chat.example.com", "127.0.0.1.example.com"}) {
    INFO(host);
    const auto open = parse({"--http-host", host});
    REQUIRE(std::holds_alternative<config>(open));
    CHECK(std::get<config>(open).effective_webchat_auth() == "invite");
    const auto refused = parse({"--http-host", host, "--webchat-auth", "none"});
    REQUIRE(std::holds_alternative<int>(refused));
    CHECK(std::get<int>(refused) == 2);
    // With the web chat off there is nothing to protect.
    CHECK(std::holds_alternative<config>(
        parse({"--http-host", host, "--webchat-auth", "none", "--webchat-enabled", "false"})));
  }
  CHECK(std::get<config>(parse({"--webchat-auth", "invite"})).effective_webchat_auth() == "invite");
  CHECK(std::holds_alternative<int>(parse({"--webchat-auth", "password"})));
  CHECK(std::holds_alternative<int>(parse({"--public-url", "chat.example.com"})));
  CHECK(std::holds_alternative<config>(parse({"--public-url", "https://chat.example.com"})));
  CHECK(std::holds_alternative<int>(parse({"--webchat-session-ttl", "10"})));
}
