// The web chat's addressing: a message naming the bot (or starting with @ its user id) is
// addressed, a room with one human is direct (is_dm, addressed), counted from the rooms'
// presence sets in Redis (docs/protocol.md §5.8). Browsers are raw WebSocket clients of
// the in-process gateway (gateway_fixture, no worker).

#include "fast_redis.hpp"
#include "gateway_fixture.hpp"
#include "inbound_stream.hpp"
#include "raw_websocket.hpp"
#include "run_coro.hpp"

#include "stargazer/bus/envelope.hpp"
#include "stargazer/core/json.hpp"
#include "stargazer/platform/redis/redis_platform.hpp"

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace stargazer;
using namespace stargazer::test;
using namespace std::chrono_literals;

namespace {

struct browser {
  raw_websocket ws;

  browser(std::uint16_t port, const std::string& room, const std::string& name, const std::string& user_id) {
    REQUIRE(ws.handshake(port, "/webchat/ws").rfind("HTTP/1.1 101", 0) == 0);
    REQUIRE(ws.read_text().find(R"("type":"hello")") != std::string::npos);
    ws.send_text(fmt::format(R"({{"type":"join","room":{},"user_id":{},"name":{}}})", json::quoted(room),
                             json::quoted(user_id), json::quoted(name)));
    REQUIRE_FALSE(ws.read_until(R"("type":"history")").empty());
  }

  void say(const std::string& text) {
    ws.send_text(R"({"type":"message","text":)" + json::quoted(text) + "}");
    REQUIRE_FALSE(ws.read_until(json::quoted(text)).empty());  // stored and shown to the room
  }
};

// Waits until the inbound stream holds `count` envelopes and returns them, oldest first.
std::vector<bus::inbound_envelope> inbound(const gateway_fixture& g, std::size_t count) {
  for (int i = 0; i < 500 && g.redis.cli({"XLEN", "sg:stream:inbound"}) != std::to_string(count); ++i)
    std::this_thread::sleep_for(10ms);
  auto out = inbound_envelopes(g.redis.url());
  REQUIRE(out.size() == count);
  return out;
}

bool wait_for_members(const gateway_fixture& g, const std::string& room, const std::string& count) {
  for (int i = 0; i < 500; ++i) {
    if (g.redis.cli({"ZCARD", platform::webchat_members_key(room)}) == count) return true;
    std::this_thread::sleep_for(10ms);
  }
  UNSCOPED_INFO("members of " << room << ": " << g.redis.cli({"ZRANGE", platform::webchat_members_key(room), "0", "-1"}));
  return false;
}

}  // namespace

TEST_CASE("webchat: one human in a room is a direct conversation, two make it a group", "[webchat][addressing]") {
  gateway_fixture g(false);
  auto ada = std::make_unique<browser>(g.port(), "lobby", "Ada", "ada-browser-01");
  REQUIRE(wait_for_members(g, "lobby", "1"));
  ada->say("what is the weather like?");
  auto e = inbound(g, 1);
  CHECK(e[0].is_dm);
  CHECK(e[0].is_addressed);

  auto bob = std::make_unique<browser>(g.port(), "lobby", "Bob", "bob-browser-01");
  REQUIRE(wait_for_members(g, "lobby", "2"));
  // Two connections of one person are still one human.
  browser ada_again(g.port(), "lobby", "Ada", "ada-browser-01");
  REQUIRE(wait_for_members(g, "lobby", "3"));

  bob->say("what is the weather like?");   // 2: nobody named
  bob->say("Star, what is the weather?");  // 3: the name as a word
  bob->say("@star what is the weather?");  // 4: @ the bot's user id
  bob->say("a starry night");              // 5: not the name
  bob->say("ask STAR.");                   // 6
  e = inbound(g, 6);
  for (std::size_t i = 1; i < 6; ++i) CHECK_FALSE(e[i].is_dm);
  CHECK_FALSE(e[1].is_addressed);
  CHECK(e[2].is_addressed);
  CHECK(e[3].is_addressed);
  CHECK_FALSE(e[4].is_addressed);
  CHECK(e[5].is_addressed);

  // Bob leaves (a close frame, then the TCP close a browser does: Beast's server side waits
  // for it) and Ada closes one of her two tabs: direct again.
  bob->ws.send_frame(0x8, "");
  bob.reset();
  ada.reset();
  REQUIRE(wait_for_members(g, "lobby", "1"));
  ada_again.say("and tomorrow?");
  e = inbound(g, 7);
  CHECK(e[6].is_dm);
  CHECK(e[6].is_addressed);
}

TEST_CASE("webchat: members nobody confirmed lately do not count", "[webchat][addressing]") {
  gateway_fixture g(false);
  browser ada(g.port(), "den", "Ada", "ada-browser-02");
  REQUIRE(wait_for_members(g, "den", "1"));
  // A member left by a gateway that died 10 minutes ago, and one of a live gateway.
  const auto now = platform::now_unix();
  g.redis.cli({"ZADD", platform::webchat_members_key("den"), fmt::format("{:.3f}", now - 600), "ghost-000001:dead"});
  ada.say("hello?");
  auto e = inbound(g, 1);
  CHECK(e[0].is_dm);
  g.redis.cli({"ZADD", platform::webchat_members_key("den"), fmt::format("{:.3f}", now), "carol-0000001:live"});
  ada.say("hello again?");
  e = inbound(g, 2);
  CHECK_FALSE(e[1].is_dm);
  CHECK_FALSE(e[1].is_addressed);
}
