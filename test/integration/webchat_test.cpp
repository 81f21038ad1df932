// The web chat against a real redis-server: WebSocket clients of the in-process gateway
// (gateway_fixture) and of real gateway processes.

#include "stargazer/bus/envelope.hpp"
#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/lock.hpp"
#include "stargazer/core/json.hpp"
#include "stargazer/platform/redis/redis_platform.hpp"
#include "stargazer/platform/webchat/webchat_platform.hpp"

#include "child_process.hpp"
#include "fast_redis.hpp"
#include "gateway_fixture.hpp"
#include "inbound_stream.hpp"
#include "webchat_bus_client.hpp"
#include "raw_http.hpp"
#include "raw_websocket.hpp"
#include "redis_server.hpp"
#include "run_coro.hpp"

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <signal.h>

using namespace stargazer;
using namespace stargazer::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

constexpr auto npos = std::string::npos;

// A browser tab, as far as the server can tell: the WebSocket and the frames of docs/webchat.md.
struct chat_client {
  raw_websocket ws;
  std::string hello;

  void connect(std::uint16_t port) {
    const auto head = ws.handshake(port, "/webchat/ws");
    INFO(head);
    REQUIRE(head.rfind("HTTP/1.1 101", 0) == 0);
    hello = ws.read_text();
    REQUIRE(hello.find(R"("type":"hello")") != npos);
  }

  // Joins and returns the history frame.
  std::string join(const std::string& room, const std::string& name, const std::string& user_id) {
    ws.send_text(fmt::format(R"({{"type":"join","room":{},"user_id":{},"name":{}}})", json::quoted(room),
                             json::quoted(user_id), json::quoted(name)));
    const auto joined = ws.read_until(R"("type":"joined")");
    INFO(room);
    REQUIRE_FALSE(joined.empty());
    auto history = ws.read_until(R"("type":"history")");
    REQUIRE_FALSE(history.empty());
    return history;
  }

  void say(const std::string& text) {
    ws.send_text(R"({"type":"message","text":)" + json::quoted(text) + "}");
  }

  // No frame is waiting: a ping's answer is the next frame.
  bool nothing_pending() {
    ws.send_text(R"({"type":"ping"})");
    return ws.read_text() == R"({"type":"pong"})";
  }
};

bus::outbound_envelope bot_message(const std::string& room, const std::string& text, const std::string& key) {
  bus::outbound_envelope e;
  e.channel_id = room;
  e.text = text;
  e.message_key = key;
  e.trace_id = bus::random_hex_id();
  return e;
}

std::string json_string_field(const std::string& frame, const std::string& name) {
  const auto key = "\"" + name + "\":\"";
  const auto at = frame.find(key);
  if (at == npos) return {};
  const auto start = at + key.size();
  return frame.substr(start, frame.find('"', start) - start);
}

std::size_t count(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("the gateway serves the page and its assets from the binary", "[webchat]") {
  gateway_fixture g(false);
  const auto page = http_get(g.port(), "/");
  CHECK(page.status == 200);
  CHECK(page.headers.find("Content-Type: text/html; charset=utf-8") != npos);
  CHECK(page.headers.find("Content-Security-Policy: default-src 'none'") != npos);
  CHECK(page.body.find(R"(<script src="/webchat/app.js" defer></script>)") != npos);
  CHECK(page.body.find(R"(aria-live="polite")") != npos);
  const auto js = http_get(g.port(), "/webchat/app.js");
  CHECK(js.status == 200);
  CHECK(js.headers.find("Content-Type: text/javascript") != npos);
  CHECK(js.body.find("/webchat/ws") != npos);
  CHECK(http_get(g.port(), "/webchat/style.css").headers.find("Content-Type: text/css") != npos);
  CHECK(http_get(g.port(), "/webchat/icon.svg").headers.find("Content-Type: image/svg+xml") != npos);
  CHECK(http_get(g.port(), "/webchat/secret.txt").status == 404);
  CHECK(http_get(g.port(), "/webchat/ws").status == 404);  // no Upgrade: not a WebSocket
}

TEST_CASE("a browser message is stored, shown to the room and published as an inbound envelope",
          "[webchat]") {
  gateway_fixture g(false);
  chat_client a;
  a.connect(g.port());
  CHECK(a.hello.find(R"("bot":{"user_id":"star","name":"Star"})") != npos);
  CHECK(a.hello.find(R"("text_bytes":4000)") != npos);
  CHECK(a.join("lobby", "Ada", "browser-0001").find(R"("messages":[])") != npos);

  const auto before = platform::now_unix();
  a.say("Hello, Star");
  const auto echo = a.ws.read_until(R"("type":"message")");
  CHECK(echo.find(R"("text":"Hello, Star")") != npos);
  CHECK(echo.find(R"("user_name":"Ada")") != npos);
  CHECK(echo.find(R"("user_id":"browser-0001")") != npos);
  CHECK(echo.find(R"("is_bot":false)") != npos);
  const auto typing = a.ws.read_until(R"("type":"typing")");
  CHECK(typing.find(R"("active":true)") != npos);
  CHECK(typing.find(R"("user_name":"Star")") != npos);

  webchat_bus_client b(g.redis.url());
  const auto entries = b.inbound(1);
  REQUIRE(entries.size() == 1);
  const auto& e = entries[0];
  CHECK(e.platform == "webchat");
  CHECK(e.channel_id == "lobby");
  CHECK(e.room_name == "lobby");
  CHECK(e.user_id == "browser-0001");
  CHECK(e.username == "Ada");
  CHECK(e.content == "Hello, Star");
  CHECK(e.is_addressed);
  CHECK(e.message_id.size() == 32);
  CHECK(e.trace_id.size() == 32);
  CHECK(e.response_nonce.size() == 32);
  CHECK(e.timestamp >= before - 1);
  CHECK(e.timestamp <= platform::now_unix() + 1);
  CHECK(json_string_field(echo, "id") == e.message_id);
  CHECK(json_string_field(typing, "turn") == e.response_nonce);

  // In the message cache (written before the envelope was published).
  CHECK(g.redis.cli({"ZCARD", "channel_msgs:webchat:lobby"}) == "1");
  CHECK(g.redis.cli({"HGET", "sg:msg:webchat:lobby:" + e.message_id, "text"}) == "Hello, Star");
  CHECK(g.redis.cli({"HGET", "sg:msg:webchat:lobby:" + e.message_id, "user_name"}) == "Ada");
}

TEST_CASE("outbound envelopes reach every client in the room and none in another room", "[webchat]") {
  gateway_fixture g(false);
  chat_client a1, a2, b1;
  a1.connect(g.port());
  a2.connect(g.port());
  b1.connect(g.port());
  a1.join("alpha", "Ada", "user-alpha-1");
  a2.join("alpha", "Bob", "user-alpha-2");
  b1.join("beta", "Cy", "user-beta-01");
  CHECK(g.webchat->connections() == 3);

  webchat_bus_client bus(g.redis.url());
  bus.publish(bot_message("alpha", "Hi, alpha", "sg:msg:webchat:alpha:1-0:0"));
  for (auto* c : {&a1, &a2}) {
    const auto f = c->ws.read_until("Hi, alpha");
    REQUIRE_FALSE(f.empty());
    CHECK(f.find(R"("type":"message")") != npos);
    CHECK(f.find(R"("user_name":"Star")") != npos);
    CHECK(f.find(R"("is_bot":true)") != npos);
    CHECK(c->nothing_pending());  // exactly once
  }
  CHECK(b1.nothing_pending());

  // Stored as the bot's message under its message key, the sent id as the marker.
  CHECK(g.redis.cli({"HGET", "sg:msg:webchat:alpha:1-0:0", "text"}) == "Hi, alpha");
  CHECK(g.redis.cli({"HGET", "sg:msg:webchat:alpha:1-0:0", "is_bot"}) == "1");
  CHECK(g.redis.cli({"HGET", "sg:msg:webchat:alpha:1-0:0", "message_id"}).size() == 32);

  // Typing and buttons reach the room too.
  bus::outbound_envelope typing;
  typing.type = bus::outbound_type::start_typing;
  typing.channel_id = "alpha";
  bus.publish(typing);
  CHECK(a1.ws.read_until(R"("type":"typing")").find(R"("active":true)") != npos);
  auto buttons = bot_message("alpha", "Pick one", "sg:msg:webchat:alpha:2-0:0");
  buttons.type = bus::outbound_type::buttons;
  buttons.buttons = {{"Yes", "yes", ""}, {"Docs", "", "https://example.com/docs"}};
  bus.publish(buttons);
  const auto b = a2.ws.read_until("Pick one");
  CHECK(
      b.find(
          R"("buttons":[{"label":"Yes","id":"yes","url":""},{"label":"Docs","id":"","url":"https://example.com/docs"}])") !=
      npos);
  CHECK(b1.nothing_pending());
}

TEST_CASE("joining a room sends its history, oldest first, with the bot's replies", "[webchat]") {
  gateway_fixture g;  // with the echo worker
  chat_client a;
  a.connect(g.port());
  a.join("story", "Ada", "user-story-1");
  a.say("first");
  CHECK_FALSE(a.ws.read_until("echo: first").empty());
  // The turn's end stops the typing indicator.
  CHECK_FALSE(a.ws.read_until(R"("active":false)").empty());
  a.say("second");
  CHECK_FALSE(a.ws.read_until("echo: second").empty());

  chat_client b;
  b.connect(g.port());
  const auto history = b.join("story", "Bob", "user-story-2");
  INFO(history);
  CHECK(count(history, R"("type":"message")") == 4);
  const auto p1 = history.find(R"("text":"first")"), p2 = history.find(R"("text":"echo: first")"),
             p3 = history.find(R"("text":"second")"), p4 = history.find(R"("text":"echo: second")");
  REQUIRE(p4 != npos);
  CHECK(p1 < p2);
  CHECK(p2 < p3);
  CHECK(p3 < p4);

  chat_client c;
  c.connect(g.port());
  CHECK(c.join("elsewhere", "Cy", "user-story-3").find(R"("messages":[])") != npos);
  // Switching rooms on one connection brings that room's history.
  CHECK(count(c.join("story", "Cy", "user-story-3"), R"("type":"message")") == 4);
}

TEST_CASE("the WebSocket refuses foreign origins unless they are allowed", "[webchat]") {
  SECTION("default: same origin only") {
    gateway_fixture g(false);
    const auto port = std::to_string(g.port());
    raw_websocket evil;
    const auto refused =
        evil.handshake(g.port(), "/webchat/ws", std::string("http://evil.example"), "127.0.0.1:" + port);
    CHECK(refused.rfind("HTTP/1.1 403", 0) == 0);
    raw_websocket same;
    CHECK(same.handshake(g.port(), "/webchat/ws", "http://127.0.0.1:" + port, "127.0.0.1:" + port)
              .rfind("HTTP/1.1 101", 0) == 0);
    raw_websocket other_port;
    CHECK(
        other_port.handshake(g.port(), "/webchat/ws", std::string("http://127.0.0.1:1"), "127.0.0.1:" + port)
            .rfind("HTTP/1.1 403", 0) == 0);
    raw_websocket no_origin;  // not a browser
    CHECK(no_origin.handshake(g.port(), "/webchat/ws", std::nullopt).rfind("HTTP/1.1 101", 0) == 0);
  }
  SECTION("--webchat-allowed-origins admits a listed origin") {
    platform::webchat_settings s;
    s.allowed_origins = {"https://chat.example.com"};
    gateway_fixture g(false, 0ms, s);
    raw_websocket listed;
    CHECK(listed.handshake(g.port(), "/webchat/ws", std::string("https://chat.example.com"))
              .rfind("HTTP/1.1 101", 0) == 0);
    raw_websocket evil;
    CHECK(evil.handshake(g.port(), "/webchat/ws", std::string("https://evil.example"))
              .rfind("HTTP/1.1 403", 0) == 0);
  }
}

TEST_CASE("bad frames get an error frame and the connection keeps working", "[webchat]") {
  gateway_fixture g(false);
  chat_client a;
  a.connect(g.port());
  struct bad_frame {
    std::string frame;
    std::string code;
  };
  const std::vector<bad_frame> cases = {
      {"not json", "bad_json"},
      {"[1,2,3]", "bad_json"},
      {R"({"type":42})", "missing_field"},
      {R"({"type":"dance"})", "unknown_type"},
      {R"({"type":"message","text":"too early"})", "not_joined"},
      {R"({"type":"join","room":"Bad Room!","user_id":"user-0001","name":"Ada"})", "bad_room"},
      {R"({"type":"join","room":")" + std::string(33, 'r') + R"(","user_id":"user-0001","name":"Ada"})",
       "bad_room"},
      {R"({"type":"join","room":"lobby","user_id":"x","name":"Ada"})", "bad_user_id"},
      {R"({"type":"join","room":"lobby","user_id":"user-0001","name":"   "})", "bad_name"},
      {R"({"type":"join","room":"lobby","user_id":"user-0001","name":")" + std::string(65, 'n') + "\"}",
       "bad_name"},
      {R"({"type":"join","room":"lobby","user_id":"user-0001","name":"STAR"})", "reserved_name"},
      {R"({"type":"join","room":"lobby","user_id":"user-0001"})", "missing_field"},
      {R"({"type":"join","room":7,"user_id":"user-0001","name":"Ada"})", "bad_field_type"},
      {std::string(12000, '['), "bad_json"},                  // deep nesting: the parser does not recurse
      {R"({"type":"message","text":"\ud800"})", "bad_json"},  // a lone surrogate is not UTF-8
      {R"({"type":"ping","pad":")" + std::string(20000, 'x') + "\"}", "frame_too_large"},
  };
  for (const auto& c : cases) {
    INFO(c.frame.substr(0, 80));
    a.ws.send_text(c.frame);
    const auto reply = a.ws.read_text();
    CHECK(reply.find(R"("type":"error")") != npos);
    CHECK(reply.find(R"("code":")" + c.code + "\"") != npos);
  }

  a.join("lobby", "Ada", "user-0001");
  a.say(std::string(4001, 'x'));
  CHECK(a.ws.read_text().find(R"("code":"text_too_long")") != npos);
  a.say(" \n\t ");
  CHECK(a.ws.read_text().find(R"("code":"empty_message")") != npos);
  a.say("still fine");
  CHECK_FALSE(a.ws.read_until(R"("text":"still fine")").empty());
  CHECK_FALSE(a.ws.read_until(R"("type":"typing")").empty());

  // Beyond the server's WebSocket limit (64 KiB) the connection is closed; others go on.
  chat_client b;
  b.connect(g.port());
  b.ws.send_text(std::string(70'000, 'x'));
  const auto closed = b.ws.read_frame();
  CHECK((closed.opcode == 0x8 || closed.opcode == -1));
  CHECK(a.nothing_pending());
}

TEST_CASE("a connection sending too fast is rate limited", "[webchat]") {
  gateway_fixture g(false);
  chat_client a;
  a.connect(g.port());
  a.join("busy", "Ada", "user-busy-1");
  for (int i = 0; i < 6; ++i) a.say("burst " + std::to_string(i));  // the bucket holds 5
  std::size_t messages = 0, limited = 0;
  while (messages + limited < 6) {
    const auto f = a.ws.read_text();
    REQUIRE(f != "<no text frame>");
    messages += f.find(R"("type":"message")") != npos;
    limited += f.find(R"("code":"rate_limited")") != npos;
  }
  CHECK(messages == 5);
  CHECK(limited == 1);
  webchat_bus_client b(g.redis.url());
  CHECK(b.inbound(5).size() == 5);
}

TEST_CASE("files are stored with a TTL, linked, downloaded, and 404 once expired", "[webchat]") {
  gateway_fixture g(false);
  chat_client a;
  a.connect(g.port());
  a.join("files", "Ada", "user-files-1");

  const std::string data("first line\n\0binary\xff", 19);
  bus::outbound_envelope file;
  file.type = bus::outbound_type::file;
  file.channel_id = "files";
  file.file_data = data;
  file.filename = "report 2026.txt";
  file.mimetype = "text/plain";
  file.message_key = "sg:msg:webchat:files:7-0:0";
  webchat_bus_client bus(g.redis.url());
  bus.publish(file);

  const auto f = a.ws.read_until(R"("type":"file")");
  REQUIRE_FALSE(f.empty());
  CHECK(f.find(R"("filename":"report 2026.txt")") != npos);
  CHECK(f.find(R"("size":19)") != npos);
  const auto url = json_string_field(f, "url");
  const auto file_id = json_string_field(f, "id");
  CHECK(file_id.size() == 32);
  CHECK(url == "/webchat/files/" + file_id + "/report%202026.txt");
  const auto ttl = std::stoi(g.redis.cli({"TTL", platform::webchat_file_key(file_id)}));
  CHECK(ttl > 86000);
  CHECK(ttl <= 86400);

  const auto got = http_get(g.port(), url);
  CHECK(got.status == 200);
  CHECK(got.body == data);
  CHECK(got.headers.find("Content-Type: text/plain") != npos);
  CHECK(got.headers.find(R"(Content-Disposition: attachment; filename="report 2026.txt")") != npos);
  CHECK(got.headers.find("X-Content-Type-Options: nosniff") != npos);
  CHECK(http_get(g.port(), "/webchat/files/" + file_id + "/other.txt").status == 404);
  CHECK(http_get(g.port(), "/webchat/files/not-an-id/report%202026.txt").status == 404);

  // The history links the file while it lives ...
  chat_client b;
  b.connect(g.port());
  CHECK(b.join("files", "Bob", "user-files-2").find(R"("url":")" + url + "\"") != npos);
  // ... and shows its name as text once it expired.
  g.redis.cli({"DEL", platform::webchat_file_key(file_id)});
  CHECK(http_get(g.port(), url).status == 404);
  const auto later = b.join("files", "Bob", "user-files-2");
  CHECK(later.find(R"("text":"[file] report 2026.txt")") != npos);
  CHECK(later.find(R"("type":"file")") == npos);
}

TEST_CASE("two gateway processes: each reply and each user message reaches the room on both",
          "[webchat][process]") {
  redis_server redis;
  const auto port1 = free_port(), port2 = free_port();
  child_process gw1({STARGAZER_BINARY, "--role=gateway", "--http-port=" + std::to_string(port1),
                     "--redis-url=" + redis.url(), "--node-id=gw-1"});
  child_process gw2({STARGAZER_BINARY, "--role=gateway", "--http-port=" + std::to_string(port2),
                     "--redis-url=" + redis.url(), "--node-id=gw-2"});
  REQUIRE(wait_for_http(port1, 10s, "/readyz"));  // readiness includes the room subscription
  REQUIRE(wait_for_http(port2, 10s, "/readyz"));
  CHECK(http_get(port1, "/readyz").body.find(R"("webchat":{"ready":true)") != npos);

  chat_client a, b;
  a.connect(port1);
  b.connect(port2);
  a.join("lobby", "Ada", "user-proc-01");
  b.join("lobby", "Bob", "user-proc-02");

  a.say("hello across gateways");
  CHECK_FALSE(b.ws.read_until("hello across gateways").empty());
  for (auto* c : {&a, &b}) CHECK_FALSE(c->ws.read_until(R"("type":"typing")").empty());  // the turn began

  webchat_bus_client bus(redis.url());
  bus.publish(bot_message("lobby", "one reply for everyone", "sg:msg:webchat:lobby:5-0:0"));
  for (auto* c : {&a, &b}) {
    CHECK_FALSE(c->ws.read_until("one reply for everyone").empty());
    CHECK(c->nothing_pending());
  }
  // Consumed by one gateway: delivered, acknowledged, nothing pending.
  CHECK(redis.cli({"XPENDING", "sg:stream:outbound:webchat", "sg:gateway:webchat"}).rfind("0", 0) == 0);

  gw1.signal(SIGTERM);
  gw2.signal(SIGTERM);
  CHECK(gw1.wait(5s) == 0);
  CHECK(gw2.wait(5s) == 0);
}
