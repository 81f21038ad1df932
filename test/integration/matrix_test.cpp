// The Matrix platform through the real binary as processes, against the Matrix homeserver
// test server (test/support/matrix, checked with matrix-nio) and a real redis-server.

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/core/json_value.hpp"
#include "stargazer/redis/connection.hpp"

#include "child_process.hpp"
#include "matrix_server.hpp"
#include "raw_http.hpp"
#include "redis_server.hpp"
#include "run_coro.hpp"

#include <catch2/catch.hpp>

#include <signal.h>

#include <functional>
#include <map>
#include <set>
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

// The bot's text replies (m.room.message, body), oldest first.
std::vector<std::string> bot_bodies(matrix_test_server& hs, const std::string& room) {
  std::vector<std::string> out;
  const auto view = hs.room_view(room);
  for (const auto* content : bot_messages(view)) out.emplace_back(stargazer::json::string_member(*content, "body"));
  return out;
}

long counter(matrix_test_server& hs, const char* name) {
  auto r = hs.control("GET", "/_test/requests?path=^$");
  return r["counters"].HasMember(name) ? r["counters"][name].GetInt64() : 0;
}

// The bus as a worker sees it: outbound envelopes published, inbound ones read.
struct bus_access {
  explicit bus_access(const redis_server& redis)
      : conn(io.get_executor(), stargazer::redis::settings_from_url(redis.url())), bus(conn, {}) {
    conn.start();
  }
  ~bus_access() { conn.stop(); }
  void publish(const stargazer::bus::outbound_envelope& e) {
    auto r = run_coro(io, bus.publish_outbound("matrix", e));
    REQUIRE(r);
  }
  std::vector<stargazer::bus::inbound_envelope> inbound() {
    std::vector<stargazer::bus::inbound_envelope> out;
    auto r = run_coro(io, conn.command("XRANGE", "sg:stream:inbound", "-", "+"));
    REQUIRE(r);
    for (const auto& entry : r->elements()) {
      const auto& fields = entry.elements()[1].elements();
      for (std::size_t i = 0; i + 1 < fields.size(); i += 2)
        if (fields[i].str() == "data") {
          auto decoded = stargazer::bus::decode_inbound(fields[i + 1].str());
          if (auto* e = std::get_if<stargazer::bus::inbound_envelope>(&decoded)) out.push_back(*e);
        }
    }
    return out;
  }
  boost::asio::io_context io;
  stargazer::redis::connection conn;
  stargazer::bus::event_bus bus;
};

// A counter or gauge of the process's /metrics (-1 when absent).
double metric(std::uint16_t port, const std::string& name) {
  const auto body = http_request(port, "GET", "/metrics", "", "").body;
  const auto at = body.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::atof(body.c_str() + at + name.size() + 2);
}

// Starts a gateway and waits until its first sync (which skips history) is behind it.
void await_first_sync(matrix_test_server& hs, long before = 0) {
  REQUIRE(poll_until([&] { return bot_syncs(hs) >= before + 2; }, 20s));
}

}  // namespace

// SIGTERM to each, then each must exit 0 within 10 s.
void stop_cleanly(std::initializer_list<child_process*> processes) {
  for (auto* p : processes) p->signal(SIGTERM);
  for (auto* p : processes) CHECK(p->wait(10s) == 0);
}

// The usual cast: the homeserver with the bot and Alice (passwords botpw, alicepw) sharing
// a room (two members: a DM, so every message addresses the bot), and a Redis.
struct bot_and_alice {
  bot_and_alice() {
    hs.user("bot", "botpw");
    alice_token = hs.user("alice", "alicepw")["access_token"].GetString();
    room = hs.room(alice, bot);
  }
  std::unique_ptr<child_process> gateway(std::vector<std::string> env = {}, const std::string& node = "gateway-1",
                                         std::uint16_t http_port = 0) {
    env.push_back("SG_MATRIX_PASSWORD=botpw");
    return std::make_unique<child_process>(gateway_args(redis, hs, http_port == 0 ? port : http_port, node), env);
  }
  matrix_test_server hs;
  redis_server redis;
  std::string room;
  std::string alice_token;
  std::uint16_t port = free_port();
};

// REQUIRE that shows a process's output when it fails (INFO would show it as it was).
#define REQUIRE_SHOWING(condition, process)              \
  do {                                                   \
    const bool holds_ = (condition);                     \
    if (!holds_) FAIL_CHECK((process).output());         \
    REQUIRE(holds_);                                     \
  } while (false)

TEST_CASE("matrix: a message round trip through gateway and worker processes, threaded as a reply",
          "[process][matrix]") {
  bot_and_alice world;
  auto& hs = world.hs;
  auto& redis = world.redis;
  const auto& room = world.room;
  const auto port = world.port;
  auto owned_gateway = world.gateway();
  auto& gateway = *owned_gateway;
  child_process worker(worker_args(redis));
  REQUIRE(wait_for_http(port, 20s, "/readyz"));
  // The first sync learns the token without waiting; the long poll after it sees what comes.
  INFO(gateway.output());
  REQUIRE(poll_until([&] { return bot_syncs(hs) >= 2; }, 20s));

  // Alice is a real client (matrix-nio); raw HTML in her Markdown stays text in the reply.
  child_process nio({"/usr/bin/python3", "-B", STARGAZER_SOURCE_DIR "/test/support/matrix/nio_user.py",
                     "--homeserver", hs.url(), "--user", "alice", "--password", "alicepw", "--room", room, "--send",
                     "hello there, **bot** <script>alert(1)</script>", "--expect-from", bot, "--timeout", "30"});
  const auto nio_exit = nio.wait(40s);
  INFO(nio.output());
  REQUIRE(nio_exit == 0);
  const auto out = nio.output();
  rapidjson::Document seen;
  seen.Parse(out.substr(out.rfind('{')).c_str());
  REQUIRE(seen.IsObject());
  const std::string asked = seen["sent_event_id"].GetString();
  CHECK(std::string(seen["reply_body"].GetString()).find("hello there") != std::string::npos);
  CHECK(std::string(seen["reply_format"].GetString()) == "org.matrix.custom.html");
  const std::string html = seen["reply_formatted_body"].GetString();
  CHECK(html.find("<strong>bot</strong>") != std::string::npos);
  CHECK(html.find("<script>") == std::string::npos);
  CHECK(html.find("&lt;script&gt;") != std::string::npos);
  CHECK(std::string(seen["mentions"][0].GetString()) == alice);

  rapidjson::Document view = hs.room_view(room);
  const auto replies = bot_messages(view);
  REQUIRE(replies.size() == 1);
  CHECK(std::string((*replies.front())["m.relates_to"]["m.in_reply_to"]["event_id"].GetString()) == asked);
  // The answered message got a read receipt.
  bool receipt = false;
  for (const auto& r : view["receipts"].GetArray())
    receipt = receipt || (std::string(r["user_id"].GetString()) == bot && std::string(r["event_id"].GetString()) == asked);
  CHECK(receipt);
  // Every request carried the token in the header, and the login kept a device id in Redis.
  CHECK(redis.cli({"HGET", "sg:matrix:" + bot + ":session", "device_id"}) != "");
  const auto metrics = http_request(port, "GET", "/metrics", "", "").body;
  CHECK(metrics.find("stargazer_matrix_events_published_total 1") != std::string::npos);

  stop_cleanly({&gateway, &worker});
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

  stop_cleanly({&gateway});
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
  stop_cleanly({&gateway});
}

TEST_CASE("matrix: a gateway SIGKILLed in the middle of a sync batch publishes nothing twice and loses nothing",
          "[process][matrix]") {
  bot_and_alice world;
  auto& hs = world.hs;
  auto& redis = world.redis;
  const auto& room = world.room;
  const auto port = world.port;
  // The third message published kills the gateway: its batch's token is not stored.
  auto gateway = world.gateway({"SG_FAILPOINTS=matrix.event_published=kill@3"});
  child_process worker(worker_args(redis));
  await_first_sync(hs);
  // Syncs wait a second before answering, so the messages after the first come as one batch.
  hs.control("POST", "/_test/force", R"({"path":"/sync$","count":-1,"delay_s":1})");
  for (int i = 1; i <= 5; ++i) hs.post(room, alice, "message " + std::to_string(i));
  const auto code = gateway->wait(20s);
  INFO(gateway->output());
  REQUIRE(code.has_value());
  CHECK(*code == 128 + SIGKILL);
  bus_access bus(redis);
  const auto published_before = bus.inbound().size();
  CHECK(published_before == 3);

  gateway = world.gateway();
  REQUIRE(poll_until([&] { return bot_bodies(hs, room).size() >= 5; }, 30s));
  std::this_thread::sleep_for(1500ms);
  const auto replies = bot_bodies(hs, room);
  CHECK(replies.size() == 5);
  std::set<std::string> answered;
  for (const auto& r : replies)
    for (int i = 1; i <= 5; ++i)
      if (r.find("message " + std::to_string(i)) != std::string::npos) answered.insert(std::to_string(i));
  CHECK(answered.size() == 5);
  const auto inbound = bus.inbound();
  CHECK(inbound.size() == 5);
  std::set<std::string> ids;
  for (const auto& e : inbound) ids.insert(e.message_id);
  CHECK(ids.size() == 5);
  CHECK(metric(port, "stargazer_matrix_events_duplicate_total") >= 1);  // the batch came again
  stop_cleanly({gateway.get(), &worker});
}

TEST_CASE("matrix: a gateway SIGKILLed after the homeserver took a reply and before its marker sends it once",
          "[process][matrix]") {
  bot_and_alice world;
  auto& hs = world.hs;
  auto& redis = world.redis;
  const auto& room = world.room;
  auto gateway = world.gateway();
  child_process worker(worker_args(redis));
  await_first_sync(hs);
  // The homeserver stores the reply, then holds its answer: the gateway never learns the
  // event id and dies meanwhile, its outbound entry unacknowledged.
  hs.control("POST", "/_test/force", R"({"path":"/send/m.room.message/","method":"PUT","count":1,"hold_s":5})");
  hs.post(room, alice, "say it once");
  REQUIRE(poll_until([&] { return bot_bodies(hs, room).size() == 1; }, 20s));
  gateway->signal(SIGKILL);
  gateway->wait(10s);
  CHECK(counter(hs, "txn_dedup") == 0);

  // Restarted under the same node id, it sends the entry again with the same transaction id
  // from the same device: the homeserver answers with the first event.
  gateway = world.gateway();
  INFO(gateway->output());
  REQUIRE(poll_until([&] { return counter(hs, "txn_dedup") >= 1; }, 30s));
  std::this_thread::sleep_for(1s);
  const auto replies = bot_bodies(hs, room);
  REQUIRE(replies.size() == 1);
  CHECK(replies[0].find("say it once") != std::string::npos);
  CHECK(redis.cli({"XPENDING", "sg:stream:outbound:matrix", "sg:gateway:matrix"}).rfind("0", 0) == 0);
  stop_cleanly({gateway.get(), &worker});
}

TEST_CASE("matrix: two gateways, one syncs, the other takes over within 10 s of its death, from the stored token",
          "[process][matrix]") {
  bot_and_alice world;
  auto& hs = world.hs;
  auto& redis = world.redis;
  const auto& room = world.room;
  const auto port_b = free_port();
  auto owned_a = world.gateway({}, "gw-a");
  auto& a = *owned_a;
  await_first_sync(hs);
  auto owned_b = world.gateway({}, "gw-b", port_b);
  auto& b = *owned_b;
  child_process worker(worker_args(redis));
  REQUIRE(wait_for_http(port_b, 20s, "/readyz"));
  const auto lease = [&] { return redis.cli({"GET", "sg:matrix:" + bot + ":sync_lease"}); };
  CHECK(lease() == "gw-a");
  CHECK(http_request(port_b, "GET", "/readyz", "", "").body.find("standing by") != std::string::npos);
  hs.post(room, alice, "before");
  REQUIRE(poll_until([&] { return bot_bodies(hs, room).size() == 1; }, 20s));

  a.signal(SIGKILL);
  a.wait(5s);
  const auto killed = std::chrono::steady_clock::now();
  hs.post(room, alice, "while nobody syncs");
  REQUIRE(poll_until([&] { return lease() == "gw-b"; }, 15s));
  CHECK(std::chrono::steady_clock::now() - killed < 10s);
  INFO(b.output());
  REQUIRE(poll_until([&] { return bot_bodies(hs, room).size() == 2; }, 20s));
  CHECK(std::chrono::steady_clock::now() - killed < 15s);
  hs.post(room, alice, "after");
  REQUIRE(poll_until([&] { return bot_bodies(hs, room).size() == 3; }, 20s));
  std::this_thread::sleep_for(1s);
  const auto replies = bot_bodies(hs, room);
  REQUIRE(replies.size() == 3);
  CHECK(replies[0].find("before") != std::string::npos);
  CHECK(replies[1].find("while nobody syncs") != std::string::npos);
  CHECK(replies[2].find("after") != std::string::npos);
  CHECK(http_request(port_b, "GET", "/readyz", "", "").body.find("holds the sync lease") != std::string::npos);
  stop_cleanly({&b, &worker});
}

TEST_CASE("matrix: files both ways, numbered options answered by number, edits kept in the history",
          "[process][matrix]") {
  using stargazer::bus::outbound_envelope;
  using stargazer::bus::outbound_type;
  bot_and_alice world;
  auto& hs = world.hs;
  auto& redis = world.redis;
  const auto& room = world.room;
  const auto& alice_token = world.alice_token;
  auto owned_gateway = world.gateway();
  auto& gateway = *owned_gateway;
  await_first_sync(hs);
  INFO(gateway.output());
  bus_access bus(redis);

  // In: Alice's image becomes an attachment naming its mxc:// URI, file name and type.
  const auto upload = http_request(hs.port, "POST", "/_matrix/media/v3/upload?filename=cat.png", "PNGDATA",
                                   "Authorization: Bearer " + alice_token + "\r\n");
  REQUIRE(upload.status == 200);
  rapidjson::Document uploaded;
  uploaded.Parse(upload.body.c_str());
  const std::string mxc = uploaded["content_uri"].GetString();
  hs.control("POST", "/_test/rooms/" + stargazer::percent_encode(room) + "/send",
             R"({"sender":")" + alice + R"(","content":{"msgtype":"m.image","body":"cat.png","url":")" + mxc +
                 R"(","info":{"mimetype":"image/png","size":7}}})");
  REQUIRE(poll_until([&] { return bus.inbound().size() == 1; }, 20s));
  {
    const auto e = bus.inbound().front();
    REQUIRE(e.attachments.size() == 1);
    CHECK(e.attachments[0].source_url == mxc);
    CHECK(e.attachments[0].filename == "cat.png");
    CHECK(e.attachments[0].mimetype == "image/png");
  }

  // Out: a file is uploaded and posted as an m.file event with its URI, size and type.
  outbound_envelope file{.type = outbound_type::file, .channel_id = room, .message_key = "sg:msg:matrix:r:1-0:0"};
  file.file_data = "a,b\n1,2\n";
  file.filename = "table.csv";
  file.mimetype = "text/csv";
  bus.publish(file);
  rapidjson::Document view;
  REQUIRE(poll_until([&] {
    view = hs.room_view(room);
    return !bot_messages(view).empty();
  }, 20s));
  {
    const auto& content = *bot_messages(view).back();
    CHECK(std::string(content["msgtype"].GetString()) == "m.file");
    CHECK(std::string(content["body"].GetString()) == "table.csv");
    CHECK(content["info"]["size"].GetInt() == 8);
    CHECK(std::string(content["info"]["mimetype"].GetString()) == "text/csv");
    const std::string url = content["url"].GetString();
    REQUIRE(url.rfind("mxc://localhost/", 0) == 0);
    const auto download = http_request(hs.port, "GET", "/_matrix/client/v1/media/download/localhost/" + url.substr(16),
                                       "", "Authorization: Bearer " + alice_token + "\r\n");
    CHECK(download.body == "a,b\n1,2\n");
  }

  // Options: a numbered list; "2" is a click on the second, with its id, as on Discord.
  outbound_envelope prompt{.type = outbound_type::buttons, .channel_id = room, .message_key = "sg:msg:matrix:r:2-0:0"};
  prompt.text = "Pick one";
  prompt.buttons = {{"Red", "pick-red", ""}, {"Blue", "pick-blue", ""}};
  bus.publish(prompt);
  REQUIRE(poll_until([&] { return bot_bodies(hs, room).size() == 2; }, 20s));
  CHECK(bot_bodies(hs, room)[1].find("2. Blue") != std::string::npos);
  hs.post(room, alice, "2");
  REQUIRE(poll_until([&] { return bus.inbound().size() == 2; }, 20s));
  {
    const auto e = bus.inbound()[1];
    CHECK(e.content == "pick-blue");
    CHECK(e.extra.at("interaction") == "button");
    CHECK(e.is_addressed);
  }
  hs.post(room, alice, "2");  // a second plain "2" is text again: the prompt was answered
  REQUIRE(poll_until([&] { return bus.inbound().size() == 3; }, 20s));
  CHECK(bus.inbound()[2].content == "2");

  // Edits: the history shows the new text, and no turn starts.
  const auto original = hs.post(room, alice, "the meeting is at 3");
  REQUIRE(poll_until([&] { return bus.inbound().size() == 4; }, 20s));
  const auto cached = "sg:msg:matrix:" + room + ":" + original;
  redis.cli({"HSET", cached, "message_id", original, "user_id", alice, "user_name", "alice", "text",
             "the meeting is at 3", "timestamp", "100.000", "is_bot", "0", "reply_to_id", ""});
  redis.cli({"ZADD", "channel_msgs:matrix:" + room, "100.000", cached});  // as the worker stores it
  hs.control("POST", "/_test/rooms/" + stargazer::percent_encode(room) + "/send",
             R"({"sender":")" + alice + R"(","content":{"msgtype":"m.text","body":"* the meeting is at 4",)"
             R"("m.new_content":{"msgtype":"m.text","body":"the meeting is at 4"},)"
             R"("m.relates_to":{"rel_type":"m.replace","event_id":")" + original + R"("}}})");
  std::string indexed;
  REQUIRE(poll_until([&] {
    indexed = redis.cli({"ZRANGE", "channel_msgs:matrix:" + room, "0", "-1"});
    return indexed.find(cached + "\n") == std::string::npos && indexed.find(cached) == std::string::npos;
  }, 20s));
  const auto edited_key = redis.cli({"HGET", cached, "edited_as"});
  CHECK(indexed.find(edited_key) != std::string::npos);
  CHECK(redis.cli({"HGET", edited_key, "text"}) == "the meeting is at 4");
  CHECK(redis.cli({"HGET", edited_key, "message_id"}) == original);
  std::this_thread::sleep_for(500ms);
  CHECK(bus.inbound().size() == 4);
  stop_cleanly({&gateway});
}

TEST_CASE("matrix: a storm of 429s on sends and syncs delays replies without losing or repeating one",
          "[process][matrix]") {
  bot_and_alice world;
  auto& hs = world.hs;
  auto& redis = world.redis;
  const auto& room = world.room;
  auto owned_gateway = world.gateway();
  auto& gateway = *owned_gateway;
  child_process worker(worker_args(redis));
  await_first_sync(hs);
  INFO(gateway.output());
  hs.control("POST", "/_test/force",
             R"({"path":"/send/m.room.message/","method":"PUT","count":12,"status":429,"retry_after_ms":150})");
  hs.control("POST", "/_test/force", R"({"path":"/sync$","count":3,"status":429,"retry_after_ms":200})");
  for (int i = 1; i <= 6; ++i) hs.post(room, alice, "storm " + std::to_string(i));
  REQUIRE_SHOWING(poll_until([&] { return bot_bodies(hs, room).size() >= 6; }, 40s), gateway);
  std::this_thread::sleep_for(1s);
  const auto replies = bot_bodies(hs, room);
  CHECK(replies.size() == 6);
  for (int i = 1; i <= 6; ++i) {
    const auto n = std::count_if(replies.begin(), replies.end(), [&](const std::string& r) {
      return r.find("storm " + std::to_string(i)) != std::string::npos;
    });
    CHECK(n == 1);
  }
  CHECK(counter(hs, "errors_M_LIMIT_EXCEEDED") >= 15);
  stop_cleanly({&gateway, &worker});
}
