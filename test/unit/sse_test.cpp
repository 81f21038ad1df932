// The Server-Sent Events parser: fed in pieces of any size, as a body arrives.

#include "stargazer/core/strings.hpp"
#include "stargazer/http/sse.hpp"

#include <catch2/catch.hpp>

using stargazer::http::sse_event;
using stargazer::http::sse_parser;

namespace {

// Feeds `text` in pieces of `step` bytes and collects the events.
std::vector<sse_event> parse_in_pieces(sse_parser& p, std::string_view text, std::size_t step) {
  std::vector<sse_event> all;
  for (std::size_t i = 0; i < text.size(); i += step)
    for (auto& e : p.feed(text.substr(i, step))) all.push_back(std::move(e));
  return all;
}

}  // namespace

TEST_CASE("sse: events as the gateway sends them, split at every byte boundary", "[sse]") {
  const std::string stream =
      "retry: 2000\n\n"
      ": keep-alive\n\n"
      "id: 1700000000000-0\nevent: message\ndata: {\"type\":\"message\",\"text\":\"hi\"}\n\n"
      "id: 1700000000001-0\nevent: turn_complete\ndata: {}\n\n";
  for (std::size_t step = 1; step <= stream.size(); ++step) {
    INFO("pieces of " << step << " bytes");
    sse_parser p;
    const auto events = parse_in_pieces(p, stream, step);
    REQUIRE(events.size() == 2);
    CHECK(events[0].type == "message");
    CHECK(events[0].data == R"({"type":"message","text":"hi"})");
    CHECK(events[0].id == "1700000000000-0");
    CHECK(events[1].type == "turn_complete");
    CHECK(events[1].id == "1700000000001-0");
    CHECK(p.last_event_id() == "1700000000001-0");
    REQUIRE(p.retry());
    CHECK(p.retry()->count() == 2000);
  }
}

TEST_CASE("sse: line ends, multi-line data, field forms and the byte order mark", "[sse]") {
  SECTION("CRLF, CR and LF, with a CR at the end of one piece and its LF in the next") {
    sse_parser p;
    auto a = p.feed("data: a\r");
    auto b = p.feed("\ndata: b\r\r");
    REQUIRE(a.empty());
    REQUIRE(b.size() == 1);
    CHECK(b[0].data == "a\nb");
    CHECK(b[0].type == "message");
  }
  SECTION("only one space after the colon is dropped; no colon means an empty value") {
    sse_parser p;
    auto e = p.feed("data:x\ndata:  y\ndata\n\n");
    REQUIRE(e.size() == 1);
    CHECK(e[0].data == "x\n y\n");
  }
  SECTION("an event without data is not dispatched, and its type does not leak into the next") {
    sse_parser p;
    auto e = p.feed("event: ping\n\ndata: z\n\n");
    REQUIRE(e.size() == 1);
    CHECK(e[0].type == "message");
    CHECK(e[0].data == "z");
  }
  SECTION("a leading byte order mark is skipped, even split across pieces") {
    sse_parser p;
    CHECK(p.feed("\xEF").empty());
    CHECK(p.feed("\xBB").empty());
    auto e = p.feed("\xBF" "data: bom\n\n");
    REQUIRE(e.size() == 1);
    CHECK(e[0].data == "bom");
  }
  SECTION("unknown fields and a non-numeric retry are ignored") {
    sse_parser p;
    auto e = p.feed("foo: bar\nretry: soon\ndata: q\n\n");
    REQUIRE(e.size() == 1);
    CHECK_FALSE(p.retry());
  }
}

TEST_CASE("sse: the resume point moves only when an event is complete", "[sse]") {
  sse_parser p;
  p.feed("id: 1-0\ndata: first\n\n");
  CHECK(p.last_event_id() == "1-0");
  p.feed("id: 2-0\ndata: half of the second");
  CHECK(p.last_event_id() == "1-0");  // a reconnect now must get event 2-0 again
  auto e = p.feed("\n\n");
  REQUIRE(e.size() == 1);
  CHECK(e[0].id == "2-0");
  CHECK(p.last_event_id() == "2-0");
}

TEST_CASE("sse: a line longer than the limit fails the stream", "[sse]") {
  sse_parser p(64);
  CHECK(p.feed("data: " + std::string(100, 'x')).empty());
  CHECK(p.failed());
  CHECK(p.feed("\n\n").empty());
}

TEST_CASE("percent_encode keeps unreserved characters and encodes the rest", "[strings]") {
  CHECK(stargazer::percent_encode("AZaz09-._~") == "AZaz09-._~");
  CHECK(stargazer::percent_encode("a b/c:d@e%") == "a%20b%2Fc%3Ad%40e%25");
  CHECK(stargazer::percent_encode("\xC3\xA9") == "%C3%A9");
  CHECK(stargazer::percent_decode(stargazer::percent_encode("x y?z#")) == "x y?z#");
}
