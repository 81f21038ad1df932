// The worker's pure parts: envelope → incoming message, prompt rendering, the history
// RPC codec, the leader lease timing.

#include "stargazer/platform/history_json.hpp"
#include "stargazer/worker/incoming_message.hpp"
#include "stargazer/worker/leader_lease.hpp"
#include "stargazer/worker/prompt.hpp"

#include <catch2/catch.hpp>

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
  CHECK_FALSE(m.extra.identity_resolved);
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
                                               {"participants", "X"}, {"tools", "T"}, {"current_time", "NOW"}});
  CHECK(rendered.find('{') == std::string::npos);
  CHECK(rendered.find("NOW") != std::string::npos);
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

// Found by test/fuzz/fuzz_history.cpp: RapidJSON's default number parsing read this
// timestamp one ulp off, so a history passed through its JSON form changed.
TEST_CASE("history timestamps survive the JSON form exactly", "[worker][fuzz]") {
  const auto first = platform::history_from_json(
      R"([{"timestamp":18446744073700000000000000000000000000000000000000000000000000000000000955161612836083302.25}])");
  REQUIRE(first);
  const auto json = platform::history_to_json(*first);
  const auto again = platform::history_from_json(json);
  REQUIRE(again);
  CHECK(again->at(0).timestamp == first->at(0).timestamp);
  CHECK(platform::history_to_json(*again) == json);
  platform::history_message m;
  m.timestamp = 1764111122.123;
  const auto back = platform::history_from_json(platform::history_to_json({m}));
  REQUIRE(back);
  CHECK(back->at(0).timestamp == m.timestamp);
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
