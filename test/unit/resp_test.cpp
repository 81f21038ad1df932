#include "stargazer/core/error.hpp"
using namespace std::string_literals;
#include "stargazer/redis/request.hpp"
#include "stargazer/redis/resp.hpp"

#include <hiredis/hiredis.h>

#include <catch2/catch.hpp>

using namespace stargazer;
using namespace stargazer::redis;

namespace {

std::string hiredis_format(const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  char* out = nullptr;
  const int n = redisFormatCommandArgv(&out, static_cast<int>(args.size()), argv.data(), lens.data());
  std::string s(out, static_cast<std::size_t>(n));
  redisFreeCommand(out);
  return s;
}

std::vector<reply> parse_all(resp_parser& p, std::string_view bytes) {
  p.feed(bytes.data(), bytes.size());
  std::vector<reply> out;
  while (auto r = p.next()) out.push_back(std::move(*r));
  return out;
}

}  // namespace

TEST_CASE("the encoder matches hiredis' formatter byte for byte, binary-safe", "[resp]") {
  const std::string binary("a\0b\r\n", 5);
  request req;
  req.push("SET", "key", binary);
  req.push("INCRBY", "n", -42);
  req.push("EMPTY", "");
  CHECK(req.commands() == 3);
  CHECK(req.payload() == hiredis_format({"SET", "key", binary}) + hiredis_format({"INCRBY", "n", "-42"}) +
                             hiredis_format({"EMPTY", ""}));
  request ranged;
  ranged.push_with({"XADD", "s", "*"}, {"f", "v"});
  CHECK(ranged.payload() == hiredis_format({"XADD", "s", "*", "f", "v"}));
}

TEST_CASE("every RESP2 reply type parses", "[resp]") {
  resp_parser p;
  auto replies = parse_all(p, "+OK\r\n-ERR bad thing\r\n:-7\r\n$3\r\na\0b\r\n$-1\r\n*-1\r\n*0\r\n*2\r\n$1\r\nx\r\n*1\r\n:1\r\n"s);
  REQUIRE(replies.size() == 8);
  CHECK(replies[0].is_status());
  CHECK(replies[0].str() == "OK");
  CHECK(replies[1].is_error());
  CHECK(replies[1].error_code() == "ERR");
  CHECK(replies[2].is_integer());
  CHECK(replies[2].integer() == -7);
  CHECK(replies[3].is_bulk());
  CHECK(replies[3].str() == std::string("a\0b", 3));
  CHECK(replies[4].is_nil());
  CHECK(replies[5].is_nil());
  CHECK(replies[6].is_array());
  CHECK(replies[6].elements().empty());
  REQUIRE(replies[7].elements().size() == 2);
  CHECK(replies[7].elements()[0].str() == "x");
  CHECK(replies[7].elements()[1].elements()[0].integer() == 1);
  CHECK_FALSE(p.error());
}

TEST_CASE("replies split at every byte boundary parse the same", "[resp]") {
  const std::string bytes = "*3\r\n$5\r\nhello\r\n:12\r\n*2\r\n+a\r\n$-1\r\n";
  for (std::size_t cut = 1; cut < bytes.size(); ++cut) {
    resp_parser p;
    auto first = parse_all(p, std::string_view(bytes).substr(0, cut));
    CHECK(first.empty());
    auto rest = parse_all(p, std::string_view(bytes).substr(cut));
    REQUIRE(rest.size() == 1);
    CHECK(rest[0].debug_string() == "[\"hello\", :12, [+a, (nil)]]");
  }
}

TEST_CASE("malformed input fails the parser for good", "[resp]") {
  resp_parser p;
  auto r = parse_all(p, "?what\r\n");
  CHECK(r.empty());
  CHECK(p.error() == make_error_code(errc::protocol_error));
  CHECK_FALSE(p.error_message().empty());
  auto after = parse_all(p, "+OK\r\n");
  CHECK(after.empty());
}

TEST_CASE("nesting deeper than hiredis supports is a protocol error", "[resp]") {
  resp_parser p;
  std::string deep;
  for (int i = 0; i < 9; ++i) deep += "*1\r\n";
  deep += ":1\r\n";
  parse_all(p, deep);
  CHECK(p.error() == make_error_code(errc::protocol_error));
}

TEST_CASE("huge declared lengths cannot make the parser buffer without bound", "[resp]") {
  SECTION("a bulk string claiming a terabyte") {
    resp_parser p(1024);
    parse_all(p, "$1099511627776\r\n");
    CHECK_FALSE(p.error());  // waiting for bytes
    parse_all(p, std::string(2048, 'x'));
    CHECK(p.error() == make_error_code(errc::reply_too_large));
  }
  SECTION("an array claiming two billion elements, fed slowly") {
    resp_parser p(64 * 1024);
    parse_all(p, "*2000000000\r\n");
    CHECK_FALSE(p.error());
    for (int i = 0; i < 20'000 && !p.error(); ++i) parse_all(p, ":1\r\n");
    CHECK(p.error() == make_error_code(errc::reply_too_large));
  }
  SECTION("within the limit, consecutive replies each get the full budget") {
    resp_parser p(4096);
    for (int i = 0; i < 100; ++i) {
      auto r = parse_all(p, "$1000\r\n" + std::string(1000, 'y') + "\r\n");
      REQUIRE(r.size() == 1);
    }
    CHECK_FALSE(p.error());
  }
}

TEST_CASE("scripts know their SHA1", "[resp]") {
  script s("return 1");
  CHECK(s.sha1() == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
}

TEST_CASE("reply helpers", "[resp]") {
  CHECK(reply::make_bulk("42").to_integer() == 42);
  CHECK_FALSE(reply::make_bulk("4x").to_integer());
  CHECK(reply::make_error("NOSCRIPT No matching script").error_code() == "NOSCRIPT");
}
