// The worker's pure parts: envelope → incoming message, prompt rendering, the history
// RPC codec, the leader lease timing.

#include "stargazer/platform/history_json.hpp"
#include "stargazer/worker/incoming_message.hpp"
#include "stargazer/worker/leader_lease.hpp"
#include "stargazer/worker/prompt.hpp"

#include <catch2/catch.hpp>

#include <limits>

using namespace stargazer;
using namespace std::chrono_literals;

TEST_CASE("an inbound envelope becomes an incoming message as the seed's codec restores it", "[worker]") {
  bus::inbound_envelope e;
  e.platform = "discord";
  e.channel_id = "c1";
  e.user_id = "u1";
  e.username = "Ada";
  e.content = "hello";
  e.is_addressed = false;
  e.attachments.push_back({std::string("\x00\x01\xff", 3), "image/png", "a.png", "https://x/a.png"});
  e.room_name = "general";
  e.timestamp = 1700000000.25;
  e.message_id = "m1";
  e.reply_to = "m0";
  e.reactions = "👍";
  e.unified_user_id = "uu";
  e.user_aliases = {"ada#1"};
  e.guild_id = "g1";
  e.guild_name = "Guild";
  e.is_dm = true;
  e.member_roles = {"admin"};
  e.member_count = 42;
  e.trace_id = "t";
  e.response_nonce = "n";
  e.extra = {{"k", "v"}};

  const auto m = worker::incoming_message_from(e);
  CHECK(m.platform == "discord");
  CHECK(m.user_name == "Ada");
  CHECK(m.text == "hello");
  CHECK_FALSE(m.is_addressed);
  REQUIRE(m.attachments.size() == 1);
  CHECK(m.attachments[0].data == std::string("\x00\x01\xff", 3));
  CHECK(m.channel_name == "general");
  CHECK(m.unix_time() == Approx(1700000000.25));
  CHECK(m.reply_to_id == "m0");
  CHECK(m.extra.guild_id == std::optional<std::string>("g1"));
  CHECK(m.extra.guild_name == "Guild");
  CHECK(m.extra.channel_id_raw == "c1");
  CHECK(m.extra.is_dm);
  CHECK(m.extra.member_roles == std::vector<std::string>{"admin"});
  CHECK(m.extra.member_count == 42);
  CHECK(m.extra.fields.at("k") == "v");
  CHECK(m.unified_user_id == std::optional<std::string>("uu"));
  CHECK(m.response_nonce == "n");

  SECTION("a missing timestamp means now") {
    e.timestamp = 0;
    const auto now = std::chrono::system_clock::now();
    CHECK(worker::incoming_message_from(e, now).timestamp == now);
  }
}

TEST_CASE("the prompt template fills known variables and keeps everything else", "[worker]") {
  const std::map<std::string, std::string, std::less<>> vars{{"bot_name", "Star"}, {"channel", "lobby"}};
  CHECK(worker::render_prompt("I am {bot_name} in {channel}.", vars) == "I am Star in lobby.");
  CHECK(worker::render_prompt("{unknown} {bot_name}", vars) == "{unknown} Star");
  CHECK(worker::render_prompt(R"(json: {"a": {bot_name}} {)", vars) == R"(json: {"a": Star} {)");
  CHECK(worker::render_prompt("{{bot_name}}", vars) == "{Star}");
  CHECK(worker::render_prompt("", vars).empty());
  CHECK(worker::render_prompt("}{", vars) == "}{");
  const auto rendered = worker::render_prompt(worker::default_system_prompt,
                                              {{"bot_name", "B"}, {"platform", "P"}, {"channel", "C"},
                                               {"participants", "X"}, {"tools", "T"}, {"current_time", "NOW"},
                                               {"extra", ""}});
  CHECK(rendered.find('{') == std::string::npos);
  CHECK(rendered.find("NOW") != std::string::npos);
}

TEST_CASE("a template line whose variables all render empty is left out, {extra} renders on one line",
          "[worker][prompt]") {
  const std::map<std::string, std::string, std::less<>> vars{{"bot_name", "Star"}, {"extra", ""}};
  CHECK(worker::render_prompt("I am {bot_name}.\nDetails: {extra}.\nBye.", vars) == "I am Star.\nBye.");
  // A line without variables stays, and so does one with any variable filled.
  CHECK(worker::render_prompt("plain\n{bot_name}{extra}", vars) == "plain\nStar");

  CHECK(worker::render_extra({}).empty());
  CHECK(worker::render_extra({{"tier", "gold"}, {"order", "A-42"}}) == "order: A-42; tier: gold");  // key order
  CHECK(worker::render_extra({{"note", "two\nlines\tand\x7f"}}) == "note: two lines and ");  // control characters
  CHECK(worker::render_extra({{"tags", R"(["a","b"])"}}) == R"(tags: ["a","b"])");  // JSON text as it came
}

TEST_CASE("the sender's label names one person across platforms", "[worker][prompt]") {
  worker::incoming_message m;
  m.platform = "discord";
  m.user_id = "123";
  CHECK(worker::sender_label(m) == "123");  // no display name: the id
  m.user_name = "Ada";
  CHECK(worker::sender_label(m) == "Ada");
  m.unified_user_id = "p-7f3a";
  m.user_aliases = {"discord:123", "matrix:@ada:example.org", "webchat:ada-01"};
  CHECK(worker::sender_label(m) == "Ada (person p-7f3a, also matrix:@ada:example.org, webchat:ada-01)");
  m.user_aliases = {"discord:123"};  // linked to nothing else yet
  CHECK(worker::sender_label(m) == "Ada (person p-7f3a)");
  m.unified_user_id = std::string();
  CHECK(worker::sender_label(m) == "Ada");
}

TEST_CASE("fetched history survives its JSON form, malformed JSON is refused", "[worker]") {
  std::vector<platform::history_message> h{{"u", "Ada", "hi \"there\"\n", 12.5, "m1", false, "", "👍"},
                                           {"star", "Star", "hello", 13, "m2", true, "m1", ""}};
  const auto back = platform::history_from_json(platform::history_to_json(h));
  REQUIRE(back);
  REQUIRE(back->size() == 2);
  CHECK((*back)[0].text == "hi \"there\"\n");
  CHECK((*back)[0].timestamp == 12.5);
  CHECK((*back)[0].reactions == "👍");
  CHECK((*back)[1].is_bot);
  CHECK((*back)[1].reply_to_id == "m1");
  CHECK_FALSE(platform::history_from_json("{}"));
  CHECK_FALSE(platform::history_from_json("[1]"));
  CHECK_FALSE(platform::history_from_json("[{"));
}

// Found by test/fuzz/fuzz_history.cpp: with kParseFullPrecisionFlag, RapidJSON 1.1.0 read
// out of bounds on this number (a tried fix for timestamps one ulp off); ASan catches it.
TEST_CASE("history JSON with long-exponent numbers parses safely", "[worker][fuzz]") {
  const std::string input = std::string("\x5b\x7b\x22\x75\x5f\x6e\x61\x6d\x65\x22\x3a\x22\x41\x6e\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x68\x69\x22\x2c\x22\x6d\x65\x73\x74\x61\x6d\x70\x22\x3a\x31\x38\x34\x37\x36\x34\x34\x34\x30\x37\x33\x37\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x31\x38\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x2e\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x30\x39\x35\x35\x31\x36\x31\x36\x31\x32\x38\x33\x36\x30\x38\x33\x30\x65\x2d\x34\x30\x30\xff\xff\xff\xff\xff\xff\xff\x00\x34\x32\x2e\x32\x35\x2c\x0e\x6d\x65\x73\x73\x61\x67\x65\x5f\x5f\x62\x6f\x74\x22\x3a\x75\x74\x36\x37\x34\x34\x30\x37\x33\x37\x9a\x30\x72\x65\x39\x7d\x5d\x35\x3a", 198);
  CHECK_NOTHROW(platform::history_from_json(input));
}

// Found by test/fuzz/fuzz_history.cpp: a timestamp that overflows to infinity made
// history_to_json write invalid JSON (RapidJSON's writer refuses non-finite numbers).
TEST_CASE("history JSON stays valid for a timestamp that overflowed", "[worker][fuzz]") {
  CHECK_NOTHROW(platform::history_from_json(R"([{"user_name":"Ann","text":"hi","timestamp":9133331e308}])"));
  std::vector<platform::history_message> h(2);
  h[0].text = "hi";
  h[0].timestamp = std::numeric_limits<double>::infinity();
  h[1].timestamp = std::numeric_limits<double>::quiet_NaN();
  const auto back = platform::history_from_json(platform::history_to_json(h));
  REQUIRE(back);
  REQUIRE(back->size() == 2);
  CHECK((*back)[0].text == "hi");
  CHECK((*back)[0].timestamp == 0);
  CHECK((*back)[1].timestamp == 0);
}

TEST_CASE("the leader lease follows the seed's ttl and checks often enough to take over", "[worker]") {
  const auto slow = worker::leader_lease_settings::for_interval(300s);
  CHECK(slow.ttl == 900s);
  CHECK(slow.check_interval == 300s);
  const auto fast = worker::leader_lease_settings::for_interval(1s);
  CHECK(fast.ttl == 60s);  // floored, as the seed
  CHECK(fast.check_interval == 1s);
  CHECK(worker::leader_lease_settings::for_interval(0ms).check_interval == 100ms);
}
