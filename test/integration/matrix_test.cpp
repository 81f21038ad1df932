// The Matrix platform through the real binary as processes, against the Matrix homeserver
// test server (test/support/matrix, checked with matrix-nio) and a real redis-server.

#include "child_process.hpp"
#include "matrix_server.hpp"
#include "raw_http.hpp"
#include "redis_server.hpp"

#include <catch2/catch.hpp>

#include <signal.h>

#include <functional>
#include <string>
#include <thread>

using namespace stargazer::test;
using namespace std::chrono_literals;

namespace {

const std::string bot = "@bot:localhost";
const std::string alice = "@alice:localhost";

bool poll_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(100ms);
  }
  return done();
}

std::vector<std::string> gateway_args(const redis_server& redis, const matrix_test_server& hs, std::uint16_t port,
                                      const std::string& node = "gateway-1") {
  return {STARGAZER_BINARY, "--role=gateway", "--redis-url=" + redis.url(), "--node-id=" + node,
          "--http-port=" + std::to_string(port), "--matrix-homeserver=" + hs.url(), "--matrix-user-id=" + bot,
          "--log-level=debug"};
}

std::vector<std::string> worker_args(const redis_server& redis) {
  return {STARGAZER_BINARY, "--role=worker", "--redis-url=" + redis.url(), "--node-id=worker-1",
          "--llm-provider=echo", "--presence-interval=0"};
}

// The /sync requests made so far, counted when they arrive (a long poll is recorded only
// when it ends).
long bot_syncs(matrix_test_server& hs) {
  auto r = hs.control("GET", "/_test/requests?path=/sync");
  return r.HasMember("counters") && r["counters"].HasMember("syncs") ? r["counters"]["syncs"].GetInt64() : 0;
}

// The bot's m.room.message events in the room (their content), oldest first.
std::vector<const rapidjson::Value*> bot_messages(const rapidjson::Document& view) {
  std::vector<const rapidjson::Value*> out;
  for (const auto& e : view["events"].GetArray())
    if (std::string(e["sender"].GetString()) == bot && std::string(e["type"].GetString()) == "m.room.message")
      out.push_back(&e["content"]);
  return out;
}

}  // namespace

TEST_CASE("matrix: a message round trip through gateway and worker processes, threaded as a reply",
          "[process][matrix]") {
  matrix_test_server hs;
  hs.user("bot", "botpw");
  hs.user("alice", "alicepw");
  const auto room = hs.room(alice, bot);
  redis_server redis;
  const auto port = free_port();
  child_process gateway(gateway_args(redis, hs, port), {"SG_MATRIX_PASSWORD=botpw"});
  child_process worker(worker_args(redis));
  REQUIRE(wait_for_http(port, 20s, "/readyz"));
  // The first sync learns the token without waiting; the long poll after it sees what comes.
  INFO(gateway.output());
  REQUIRE(poll_until([&] { return bot_syncs(hs) >= 2; }, 20s));

  const auto asked = hs.post(room, alice, "hello there, **bot**");
  rapidjson::Document view;
  REQUIRE(poll_until([&] {
    view = hs.room_view(room);
    return !bot_messages(view).empty();
  }, 20s));
  const auto replies = bot_messages(view);
  REQUIRE(replies.size() == 1);
  const auto& reply = *replies.front();
  CHECK(std::string(reply["body"].GetString()).find("hello there") != std::string::npos);
  CHECK(std::string(reply["format"].GetString()) == "org.matrix.custom.html");
  CHECK(std::string(reply["formatted_body"].GetString()).find("<strong>bot</strong>") != std::string::npos);
  CHECK(std::string(reply["m.relates_to"]["m.in_reply_to"]["event_id"].GetString()) == asked);
  CHECK(std::string(reply["m.mentions"]["user_ids"][0].GetString()) == alice);
  // The answered message got a read receipt.
  bool receipt = false;
  for (const auto& r : view["receipts"].GetArray())
    receipt = receipt || (std::string(r["user_id"].GetString()) == bot && std::string(r["event_id"].GetString()) == asked);
  CHECK(receipt);
  // Every request carried the token in the header, and the login kept a device id in Redis.
  CHECK(redis.cli({"HGET", "sg:matrix:" + bot + ":session", "device_id"}) != "");
  const auto metrics = http_request(port, "GET", "/metrics", "", "").body;
  CHECK(metrics.find("stargazer_matrix_events_published_total 1") != std::string::npos);

  gateway.signal(SIGTERM);
  worker.signal(SIGTERM);
  CHECK(gateway.wait(10s) == 0);
  CHECK(worker.wait(10s) == 0);
}

TEST_CASE("matrix: invites are taken from allowed users only, and encrypted rooms are refused and counted",
          "[process][matrix]") {
  matrix_test_server hs;
  hs.user("bot", "botpw");
  hs.user("alice", "alicepw");
  hs.user("mallory", "mallorypw");
  redis_server redis;
  const auto port = free_port();
  auto args = gateway_args(redis, hs, port);
  args.push_back("--matrix-allowed-users=@alice:*");
  child_process gateway(args, {"SG_MATRIX_PASSWORD=botpw"});
  REQUIRE(wait_for_http(port, 20s, "/readyz"));
  REQUIRE(poll_until([&] { return bot_syncs(hs) >= 2; }, 20s));

  const auto invite = [&](const std::string& creator, bool encrypted) {
    auto d = hs.control("POST", "/_test/rooms",
                        R"({"creator":")" + creator + R"(","name":"Invite","invite":[")" + bot + R"("],"encrypted":)" +
                            (encrypted ? "true" : "false") + "}");
    return std::string(d["room_id"].GetString());
  };
  const auto from_alice = invite(alice, false);
  const auto from_mallory = invite("@mallory:localhost", false);
  const auto encrypted = invite(alice, true);
  const auto membership = [&](const std::string& room) {
    auto v = hs.room_view(room);
    return v["members"].HasMember(bot.c_str()) ? std::string(v["members"][bot.c_str()].GetString()) : std::string();
  };
  INFO(gateway.output());
  CHECK(poll_until([&] { return membership(from_alice) == "join"; }, 15s));
  CHECK(poll_until([&] { return membership(from_mallory) == "leave"; }, 15s));  // declined
  CHECK(poll_until([&] { return membership(encrypted) == "leave"; }, 15s));
  const auto metrics = http_request(port, "GET", "/metrics", "", "").body;
  CHECK(metrics.find("stargazer_matrix_encrypted_rooms_refused_total 1") != std::string::npos);

  // A joined room turned encrypted later: a notice, then the bot leaves.
  hs.control("POST", "/_test/rooms/" + stargazer::percent_encode(from_alice) + "/state",
             R"({"sender":")" + alice + R"(","type":"m.room.encryption","state_key":"","content":{"algorithm":"m.megolm.v1.aes-sha2"}})");
  CHECK(poll_until([&] { return membership(from_alice) == "leave"; }, 15s));
  const auto view = hs.room_view(from_alice);
  bool notice = false;
  for (const auto& e : view["events"].GetArray())
    if (std::string(e["sender"].GetString()) == bot && e["content"].HasMember("msgtype"))
      notice = notice || std::string(e["content"]["msgtype"].GetString()) == "m.notice";
  CHECK(notice);

  gateway.signal(SIGTERM);
  CHECK(gateway.wait(10s) == 0);
}

TEST_CASE("matrix: a revoked access token is a clear error that /readyz reports, without a tight loop",
          "[process][matrix]") {
  matrix_test_server hs;
  auto created = hs.user("bot", "botpw");
  const std::string token = created["access_token"].GetString();
  hs.control("POST", "/_test/tokens/revoke", R"({"access_token":")" + token + R"("})");
  redis_server redis;
  const auto port = free_port();
  child_process gateway(gateway_args(redis, hs, port), {"SG_MATRIX_ACCESS_TOKEN=" + token});
  REQUIRE(wait_for_http(port, 20s, "/healthz"));
  std::string body;
  REQUIRE(poll_until([&] {
    body = http_request(port, "GET", "/readyz", "", "").body;
    return body.find("refused --matrix-access-token") != std::string::npos;
  }, 15s));
  CHECK(body.find("M_UNKNOWN_TOKEN") != std::string::npos);
  const auto before = hs.control("GET", "/_test/requests")["records"].Size();
  std::this_thread::sleep_for(2s);
  CHECK(hs.control("GET", "/_test/requests")["records"].Size() - before <= 2);  // no tight loop
  gateway.signal(SIGTERM);
  CHECK(gateway.wait(10s) == 0);
}
