// Web chat sign-in (docs/webchat.md, "Sign-in") against a real redis-server: the invite
// and session routes over real HTTP, the WebSocket of the in-process gateway
// (gateway_fixture with --webchat-auth invite), revocation closing sockets, and the
// `stargazer webchat invite|list|revoke` commands as the real binary.

#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/lock.hpp"
#include "stargazer/core/digest.hpp"
#include "stargazer/core/json.hpp"
#include "stargazer/platform/webchat/webchat_platform.hpp"

#include "api_client.hpp"
#include "child_process.hpp"
#include "fast_redis.hpp"
#include "gateway_fixture.hpp"
#include "inbound_stream.hpp"
#include "raw_http.hpp"
#include "raw_websocket.hpp"
#include "run_coro.hpp"
#include "webchat_bus_client.hpp"

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <chrono>
#include <sstream>
#include <thread>

using namespace stargazer;
using namespace stargazer::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

constexpr auto npos = std::string::npos;

platform::webchat_settings invite_settings() {
  platform::webchat_settings s;
  s.auth = platform::webchat_auth_mode::invite;
  s.admin_key_sha256 = sha256_hex(gateway_fixture::admin_key);
  return s;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != npos; }

std::string cookie_header(const std::string& token) { return "Cookie: sg_webchat_session=" + token + "\r\n"; }

// POST /webchat/invites with the admin key; the test fails unless it answers 201.
rapidjson::Document invite(gateway_fixture& g, const std::string& body) {
  const auto r = call(g.port(), "POST", "/webchat/invites", admin, body);
  INFO(r.raw);
  REQUIRE(r.status == 201);
  return json_of(r);
}

std::string invite_token(gateway_fixture& g, const std::string& body = R"({"name":"Ada"})") {
  const auto d = invite(g, body);
  return d["token"].GetString();
}

raw_response redeem(gateway_fixture& g, const std::string& token, const std::string& headers = {}) {
  return call(g.port(), "POST", "/webchat/session", headers, R"({"invite":)" + json::quoted(token) + "}");
}

// The Set-Cookie line of a response ("" when there is none).
std::string set_cookie_line(const raw_response& r) {
  const auto at = r.headers.find("Set-Cookie: ");
  if (at == npos) return {};
  const auto start = at + 12;
  return r.headers.substr(start, r.headers.find("\r\n", start) - start);
}

// The session token a sign-in set in its cookie.
std::string session_token(const raw_response& r) {
  const auto line = set_cookie_line(r);
  const std::string prefix = "sg_webchat_session=";
  REQUIRE(line.rfind(prefix, 0) == 0);
  return line.substr(prefix.size(), line.find(';') - prefix.size());
}

// Invites `body`'s person and signs in with the link: the session cookie's token.
std::string sign_in(gateway_fixture& g, const std::string& body = R"({"name":"Ada"})") {
  const auto r = redeem(g, invite_token(g, body));
  INFO(r.raw);
  REQUIRE(r.status == 201);
  return session_token(r);
}

std::string session_id_of(gateway_fixture& g, const std::string& token) {
  const auto r = call(g.port(), "GET", "/webchat/session", cookie_header(token));
  REQUIRE(r.status == 200);
  const auto d = json_of(r);
  REQUIRE(d["signed_in"].GetBool());
  return d["session"]["session_id"].GetString();
}

// A signed-in browser tab: the WebSocket with the session cookie.
struct signed_in_client {
  raw_websocket ws;
  std::string hello;

  void connect(std::uint16_t port, const std::string& token) {
    const auto head = ws.handshake(port, "/webchat/ws", std::string("http://localhost"), "localhost",
                                   cookie_header(token));
    INFO(head);
    REQUIRE(head.rfind("HTTP/1.1 101", 0) == 0);
    hello = ws.read_text();
    REQUIRE(contains(hello, R"("type":"hello")"));
  }

  // Sends a join frame; returns the first answer (joined or error), skipping history.
  std::string join(const std::string& room, const std::string& extra_fields = {}) {
    ws.send_text(R"({"type":"join","room":)" + json::quoted(room) + extra_fields + "}");
    return ws.read_text();
  }

  void say(const std::string& text) { ws.send_text(R"({"type":"message","text":)" + json::quoted(text) + "}"); }

  // Frames are skipped until the server closes the socket; how long that took (nullopt:
  // still open after `limit`).
  std::optional<std::chrono::milliseconds> time_to_close(std::chrono::milliseconds limit) {
    const auto start = std::chrono::steady_clock::now();
    const auto elapsed = [&] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    };
    while (elapsed() < limit) {
      const auto left = static_cast<int>((limit - elapsed()).count());
      const auto f = ws.read_frame(std::max(left, 1));
      if (f.opcode == -1 && ws.peer_closed()) return elapsed();  // end of stream, not a timeout
      if (f.opcode == 8) return elapsed();
    }
    return std::nullopt;
  }
};

std::string json_string_field(const std::string& frame, const std::string& name) {
  const auto key = "\"" + name + "\":\"";
  const auto at = frame.find(key);
  if (at == npos) return {};
  const auto start = at + key.size();
  return frame.substr(start, frame.find('"', start) - start);
}

}  // namespace

TEST_CASE("an invite link signs in once, with an HttpOnly, SameSite=Strict session cookie", "[webchat][auth]") {
  gateway_fixture g(false, 0ms, invite_settings());
  const auto d = invite(g, R"({"name":"  Ada Lovelace ","rooms":["lobby"],"expires_in":3600})");
  const std::string token = d["token"].GetString(), link = d["link"].GetString();
  CHECK(token.size() == 64);
  CHECK(link == "http://localhost/webchat/signin#" + token);  // the token in the fragment only
  CHECK(std::string(d["name"].GetString()) == "Ada Lovelace");  // trimmed
  CHECK(std::string(d["state"].GetString()) == "pending");
  CHECK(std::string(d["invite_id"].GetString()) == sha256_hex(token).substr(0, 16));

  // Redis holds the digest, never the token; the key lives until expiry plus its tombstone.
  const auto invite_key = "webchat:invite:" + sha256_hex(token);
  CHECK(g.redis.cli({"HGET", invite_key, "name"}) == "Ada Lovelace");
  const auto ttl = std::stol(g.redis.cli({"TTL", invite_key}));
  CHECK(ttl > 3600);
  CHECK(ttl <= 3600 + 7 * 86400);
  CHECK_FALSE(contains(g.redis.cli({"KEYS", "*"}), token));
  CHECK_FALSE(contains(g.redis.cli({"HGETALL", invite_key}), token));

  const auto first = redeem(g, token);
  INFO(first.raw);
  REQUIRE(first.status == 201);
  const auto cookie = set_cookie_line(first);
  const auto session = session_token(first);
  CHECK(session.size() == 64);
  CHECK(session != token);
  CHECK(cookie == "sg_webchat_session=" + session + "; Path=/webchat; Max-Age=2592000; HttpOnly; SameSite=Strict");
  CHECK(first.headers.find("Cache-Control: no-store") != npos);
  const auto body = json_of(first);
  CHECK(std::string(body["session"]["name"].GetString()) == "Ada Lovelace");
  CHECK(std::string(body["session"]["user_id"].GetString()).rfind("inv-", 0) == 0);
  const auto session_key = "webchat:session:" + sha256_hex(session);
  CHECK(g.redis.cli({"HGET", session_key, "name"}) == "Ada Lovelace");
  const auto session_ttl = std::stol(g.redis.cli({"TTL", session_key}));
  CHECK(session_ttl > 2592000 - 60);
  CHECK_FALSE(contains(g.redis.cli({"KEYS", "*"}), session));
  CHECK(g.redis.cli({"HGET", invite_key, "state"}) == "used");

  // The link works once.
  const auto again = redeem(g, token);
  CHECK(again.status == 410);
  CHECK(contains(again.body, R"("code":"invite_used")"));
  CHECK(set_cookie_line(again).empty());

  // Who am I: with the cookie, without it, with a made-up one.
  const auto me = call(g.port(), "GET", "/webchat/session", cookie_header(session));
  CHECK(me.status == 200);
  CHECK(contains(me.body, R"("signed_in":true)"));
  CHECK(contains(me.body, R"("name":"Ada Lovelace")"));
  CHECK(contains(me.body, R"("rooms":["lobby"])"));
  const auto nobody = call(g.port(), "GET", "/webchat/session", "");
  CHECK(contains(nobody.body, R"("signed_in":false)"));
  CHECK(contains(nobody.body, R"("code":"no_session")"));
  const auto stale = call(g.port(), "GET", "/webchat/session", cookie_header(std::string(64, 'a')));
  CHECK(contains(stale.body, R"("code":"session_expired")"));
  CHECK(contains(set_cookie_line(stale), "Max-Age=0"));  // the dead cookie is cleared

  // Bad links and bodies say what is wrong.
  CHECK(contains(redeem(g, std::string(64, 'b')).body, R"("code":"invite_unknown")"));
  CHECK(redeem(g, "not-a-token").status == 404);
  CHECK(contains(call(g.port(), "POST", "/webchat/session", "", "{}").body, R"("code":"missing_field")"));
  CHECK(contains(call(g.port(), "POST", "/webchat/session", "", R"({"invite":7})").body, R"("code":"bad_field_type")"));
  CHECK(contains(call(g.port(), "POST", "/webchat/session", "", "nope").body, R"("code":"bad_json")"));
  // Another site's page cannot sign a browser in.
  const auto foreign = redeem(g, invite_token(g), "Origin: https://evil.example\r\n");
  CHECK(foreign.status == 403);
  CHECK(contains(foreign.body, R"("code":"forbidden_origin")"));

  // Sign-out ends the session and clears the cookie.
  const auto out = call(g.port(), "DELETE", "/webchat/session", cookie_header(session));
  CHECK(out.status == 200);
  CHECK(contains(out.body, R"("signed_out":true)"));
  CHECK(contains(set_cookie_line(out), "Max-Age=0"));
  CHECK(g.redis.cli({"EXISTS", session_key}) == "0");
}

TEST_CASE("the session cookie is Secure when --public-url is https, and links use that URL", "[webchat][auth]") {
  auto s = invite_settings();
  s.public_url = "https://chat.example.com/";
  gateway_fixture g(false, 0ms, s);
  const auto d = invite(g, R"({"name":"Ada"})");
  const std::string token = d["token"].GetString();
  CHECK(std::string(d["link"].GetString()) == "https://chat.example.com/webchat/signin#" + token);
  const auto r = redeem(g, token);
  REQUIRE(r.status == 201);
  CHECK(contains(set_cookie_line(r), "; HttpOnly; SameSite=Strict; Secure"));
}

TEST_CASE("without a session the WebSocket upgrade is refused with 401 and a JSON body", "[webchat][auth]") {
  gateway_fixture g(false, 0ms, invite_settings());
  raw_websocket anonymous;
  const auto head = anonymous.handshake(g.port(), "/webchat/ws");
  INFO(head);
  CHECK(head.rfind("HTTP/1.1 401", 0) == 0);
  CHECK(contains(head, "Content-Type: application/json"));
  const auto body = anonymous.read_body(head);
  CHECK(contains(body, R"("error":{"code":"no_session")"));

  raw_websocket forged;
  const auto forged_head =
      forged.handshake(g.port(), "/webchat/ws", std::string("http://localhost"), "localhost", cookie_header(std::string(64, 'c')));
  CHECK(forged_head.rfind("HTTP/1.1 401", 0) == 0);
  CHECK(contains(forged.read_body(forged_head), R"("code":"session_expired")"));

  // The origin check still comes first.
  raw_websocket evil;
  const auto token = sign_in(g);
  CHECK(evil.handshake(g.port(), "/webchat/ws", std::string("https://evil.example"), "localhost", cookie_header(token))
            .rfind("HTTP/1.1 403", 0) == 0);

  // Files need a session too.
  CHECK(http_get(g.port(), "/webchat/files/0123456789abcdef0123456789abcdef/a.txt").status == 401);

  signed_in_client ok;
  ok.connect(g.port(), token);
  CHECK(contains(ok.hello, R"("auth":"invite")"));
  CHECK(contains(ok.hello, R"("you":{"user_id":"inv-)"));
  CHECK(contains(ok.hello, R"("name":"Ada","admin":false,"rooms":[]})"));
}

TEST_CASE("the name and user id are the invite's: a client cannot speak as someone else", "[webchat][auth]") {
  gateway_fixture g(false, 0ms, invite_settings());
  signed_in_client ada;
  ada.connect(g.port(), sign_in(g, R"({"name":"Ada"})"));
  const auto joined = ada.join("lobby", R"(,"user_id":"mallory-0001","name":"Mallory")");
  INFO(joined);
  CHECK(contains(joined, R"("type":"joined")"));
  CHECK(contains(joined, R"("name":"Ada")"));
  CHECK_FALSE(contains(joined, "Mallory"));
  CHECK_FALSE(ada.ws.read_until(R"("type":"history")").empty());
  ada.say("hello, I am Ada");
  const auto echo = ada.ws.read_until(R"("type":"message")");
  CHECK(contains(echo, R"("user_name":"Ada")"));
  const auto user_id = json_string_field(echo, "user_id");
  CHECK(user_id == "inv-" + sha256_hex("Ada").substr(0, 24));

  // An admin invite: the gateway vouches for the admin role on the envelope.
  signed_in_client boss;
  boss.connect(g.port(), sign_in(g, R"({"name":"Grace","admin":true})"));
  CHECK(contains(boss.hello, R"("admin":true)"));
  CHECK(contains(boss.join("lobby"), R"("name":"Grace")"));
  CHECK_FALSE(boss.ws.read_until(R"("type":"history")").empty());
  boss.say("!mode always");
  CHECK_FALSE(boss.ws.read_until("!mode always").empty());

  const auto entries = inbound_envelopes(g.redis.url());
  REQUIRE(entries.size() == 2);
  CHECK(entries[0].username == "Ada");
  CHECK(entries[0].user_id == user_id);
  CHECK(entries[0].member_roles.empty());
  CHECK(entries[1].username == "Grace");
  CHECK(entries[1].member_roles == std::vector<std::string>{"admin"});
}

TEST_CASE("an invite's --rooms restricts the rooms (and their files) a session may use", "[webchat][auth]") {
  gateway_fixture g(false, 0ms, invite_settings());
  const auto restricted_token = sign_in(g, R"({"name":"Ada","rooms":["dev","lobby","dev"]})");
  signed_in_client restricted;
  restricted.connect(g.port(), restricted_token);
  CHECK(contains(restricted.hello, R"("default_room":"dev")"));
  CHECK(contains(restricted.hello, R"("rooms":["dev","lobby"])"));  // duplicates dropped
  CHECK(contains(restricted.join("lobby"), R"("type":"joined")"));
  CHECK_FALSE(restricted.ws.read_until(R"("type":"history")").empty());
  const auto refused = restricted.join("secret");
  CHECK(contains(refused, R"("code":"forbidden_room")"));
  CHECK(contains(refused, "dev,lobby"));
  restricted.say("still in the lobby");
  CHECK(contains(restricted.ws.read_until(R"("type":"message")"), R"("room":"lobby")"));

  // A file sent to a room the session may not use is not its to download.
  const auto open_token = sign_in(g, R"({"name":"Bob"})");
  signed_in_client everywhere;
  everywhere.connect(g.port(), open_token);
  CHECK(contains(everywhere.join("secret"), R"("type":"joined")"));
  bus::outbound_envelope file;
  file.type = bus::outbound_type::file;
  file.channel_id = "secret";
  file.file_data = "classified";
  file.filename = "plans.txt";
  file.mimetype = "text/plain";
  file.message_key = "sg:msg:webchat:secret:9-0:0";
  webchat_bus_client(g.redis.url()).publish(file);
  const auto frame = everywhere.ws.read_until(R"("type":"file")");
  REQUIRE_FALSE(frame.empty());
  const auto url = json_string_field(frame, "url");
  CHECK(call(g.port(), "GET", url, cookie_header(open_token)).status == 200);
  CHECK(call(g.port(), "GET", url, cookie_header(restricted_token)).status == 404);
  CHECK(call(g.port(), "GET", url, "").status == 401);

  CHECK(contains(call(g.port(), "POST", "/webchat/invites", admin, R"({"name":"Cy","rooms":["Bad Room"]})").body,
                 R"("code":"bad_room")"));
}

TEST_CASE("a revoked session's sockets on the gateway close at once through the revocation message",
          "[webchat][auth]") {
  auto s = invite_settings();
  s.session_check_interval = 60s;  // only the Pub/Sub message can close them within the test
  gateway_fixture g(false, 0ms, s);
  const auto token = sign_in(g);
  signed_in_client a, b;  // two tabs of one browser
  a.connect(g.port(), token);
  b.connect(g.port(), token);
  a.join("lobby");
  const auto id = session_id_of(g, token);
  const auto r = call(g.port(), "DELETE", "/webchat/sessions/" + id, admin);
  INFO(r.raw);
  REQUIRE(r.status == 200);
  const auto closed_a = a.time_to_close(5s), closed_b = b.time_to_close(5s);
  REQUIRE(closed_a.has_value());
  REQUIRE(closed_b.has_value());
  raw_websocket again;
  CHECK(again.handshake(g.port(), "/webchat/ws", std::string("http://localhost"), "localhost", cookie_header(token))
            .rfind("HTTP/1.1 401", 0) == 0);
  CHECK(call(g.port(), "DELETE", "/webchat/sessions/" + id, admin).status == 404);
}

TEST_CASE("a revoked session's open sockets close within 5 s, on every path of revocation", "[webchat][auth]") {
  gateway_fixture g(false, 0ms, invite_settings());

  SECTION("by name: every session and pending invite of that name") {
    const auto first = sign_in(g, R"({"name":"Ada"})"), second = sign_in(g, R"({"name":"Ada"})");
    const auto other = sign_in(g, R"({"name":"Bob"})");
    const auto pending = invite_token(g, R"({"name":"Ada"})");
    signed_in_client a1, a2, bob;
    a1.connect(g.port(), first);
    a2.connect(g.port(), second);
    bob.connect(g.port(), other);
    const auto r = call(g.port(), "DELETE", "/webchat/users/Ada", admin);
    INFO(r.raw);
    REQUIRE(r.status == 200);
    CHECK(contains(r.body, R"("sessions":2,"invites":1)"));
    CHECK(a1.time_to_close(5s).has_value());
    CHECK(a2.time_to_close(5s).has_value());
    CHECK_FALSE(bob.time_to_close(1s).has_value());  // others stay
    CHECK(contains(redeem(g, pending).body, R"("code":"invite_revoked")"));
    CHECK(call(g.port(), "DELETE", "/webchat/users/Nobody", admin).status == 404);
  }
  SECTION("a session key gone without a message (lost Pub/Sub, expiry): the periodic check closes it") {
    const auto token = sign_in(g);
    signed_in_client a;
    a.connect(g.port(), token);
    g.redis.cli({"DEL", "webchat:session:" + sha256_hex(token)});
    CHECK(a.time_to_close(5s).has_value());
  }
  SECTION("revoking a used invite revokes the session it opened") {
    const auto d = invite(g, R"({"name":"Ada"})");
    const std::string invite_id = d["invite_id"].GetString();
    const auto r = redeem(g, d["token"].GetString());
    REQUIRE(r.status == 201);
    signed_in_client a;
    a.connect(g.port(), session_token(r));
    const auto revoked = call(g.port(), "DELETE", "/webchat/invites/" + invite_id, admin);
    CHECK(revoked.status == 200);
    CHECK(contains(revoked.body, R"("state":"revoked")"));
    CHECK(a.time_to_close(5s).has_value());
  }
}

TEST_CASE("invites and sessions expire", "[webchat][auth]") {
  auto s = invite_settings();
  s.session_ttl = 2s;
  s.session_check_interval = 500ms;
  gateway_fixture g(false, 0ms, s);

  const auto short_lived = invite(g, R"({"name":"Ada","expires_in":1})");
  const auto revoked = invite(g, R"({"name":"Bob"})");
  CHECK(call(g.port(), "DELETE", std::string("/webchat/invites/") + revoked["invite_id"].GetString(), admin).status ==
        200);
  std::this_thread::sleep_for(1100ms);
  CHECK(contains(redeem(g, short_lived["token"].GetString()).body, R"("code":"invite_expired")"));
  CHECK(contains(redeem(g, revoked["token"].GetString()).body, R"("code":"invite_revoked")"));

  // The list says what became of each.
  const auto listed = call(g.port(), "GET", "/webchat/invites", admin);
  CHECK(contains(listed.body, R"("state":"expired")"));
  CHECK(contains(listed.body, R"("state":"revoked")"));

  const auto token = sign_in(g, R"({"name":"Cy"})");
  CHECK(contains(set_cookie_line(redeem(g, invite_token(g, R"({"name":"Dee"})"))), "Max-Age=2;"));
  signed_in_client cy;
  cy.connect(g.port(), token);
  const auto closed = cy.time_to_close(5s);  // 2 s of session, then the next check
  REQUIRE(closed.has_value());
  CHECK(contains(call(g.port(), "GET", "/webchat/session", cookie_header(token)).body, R"("code":"session_expired")"));
}

TEST_CASE("the invite routes take only the admin key and check what they are given", "[webchat][auth]") {
  gateway_fixture g(false, 0ms, invite_settings());
  CHECK(call(g.port(), "POST", "/webchat/invites", "", R"({"name":"Ada"})").status == 401);
  CHECK(call(g.port(), "POST", "/webchat/invites", bearer("wrong"), R"({"name":"Ada"})").status == 403);
  CHECK(call(g.port(), "GET", "/webchat/sessions", bearer("wrong")).status == 403);
  struct bad_body {
    std::string body;
    std::string code;
  };
  const std::vector<bad_body> cases{
      {"{}", "missing_field"},
      {R"({"name":42})", "bad_field_type"},
      {R"({"name":"   "})", "bad_name"},
      {R"({"name":")" + std::string(65, 'n') + "\"}", "bad_name"},
      {R"({"name":"Ada\u0007"})", "bad_name"},
      {R"({"name":"star"})", "reserved_name"},
      {R"({"name":"Ada","rooms":"lobby"})", "bad_field_type"},
      {R"({"name":"Ada","rooms":[")" + std::string(33, 'r') + "\"]}", "bad_room"},
      {R"({"name":"Ada","expires_in":0})", "bad_expires_in"},
      {R"({"name":"Ada","expires_in":31536001})", "bad_expires_in"},
      {R"({"name":"Ada","expires_in":"7d"})", "bad_expires_in"},
      {R"({"name":"Ada","admin":"yes"})", "bad_field_type"},
      {"[1]", "bad_json"},
  };
  for (const auto& c : cases) {
    INFO(c.body);
    const auto r = call(g.port(), "POST", "/webchat/invites", admin, c.body);
    CHECK(r.status == 400);
    CHECK(contains(r.body, R"("code":")" + c.code + "\""));
  }
  CHECK(call(g.port(), "DELETE", "/webchat/sessions/not-an-id", admin).status == 400);
  CHECK(call(g.port(), "DELETE", "/webchat/invites/0123456789abcdef", admin).status == 404);

  const auto token = sign_in(g, R"({"name":"Ada","rooms":["lobby"],"admin":true})");
  const auto sessions = json_of(call(g.port(), "GET", "/webchat/sessions", admin));
  REQUIRE(sessions["sessions"].Size() == 1);
  const auto& s = sessions["sessions"][0];
  CHECK(std::string(s["session_id"].GetString()) == sha256_hex(token).substr(0, 16));
  CHECK(std::string(s["name"].GetString()) == "Ada");
  CHECK(s["admin"].GetBool());
  const auto invites = json_of(call(g.port(), "GET", "/webchat/invites", admin));
  REQUIRE(invites["invites"].Size() == 1);
  CHECK(std::string(invites["invites"][0]["state"].GetString()) == "used");
  CHECK(std::string(invites["invites"][0]["session_id"].GetString()) == s["session_id"].GetString());
}

TEST_CASE("with --webchat-auth none the chat needs no session, as before", "[webchat][auth]") {
  gateway_fixture g(false);
  CHECK(contains(call(g.port(), "GET", "/webchat/session", "").body, R"({"auth":"none","signed_in":false})"));
  const auto token = invite_token(g);  // invites can be prepared before switching to invite
  const auto r = redeem(g, token);
  CHECK(r.status == 409);
  CHECK(contains(r.body, R"("code":"signin_disabled")"));
  raw_websocket ws;
  CHECK(ws.handshake(g.port(), "/webchat/ws").rfind("HTTP/1.1 101", 0) == 0);
  CHECK_FALSE(contains(ws.read_text(), "\"auth\""));
}

// ---------------------------------------------------------------------------------------
// The commands, as the real binary

namespace {

const std::string admin_env = std::string("SG_ADMIN_API_KEY=") + gateway_fixture::admin_key;

std::pair<int, std::string> sg(const gateway_fixture& g, std::vector<std::string> args) {
  std::vector<std::string> argv{STARGAZER_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--url");
  argv.push_back("http://127.0.0.1:" + std::to_string(g.port()));
  return run_process(argv, {admin_env}, std::chrono::seconds(30));
}

// The rest of the line after `prefix` (empty when `prefix` is not in `text`).
std::string after(const std::string& text, const std::string& prefix) {
  const auto at = text.find(prefix);
  if (at == npos) return {};
  const auto start = at + prefix.size();
  return text.substr(start, text.find('\n', start) - start);
}

}  // namespace

TEST_CASE("stargazer webchat invite, list and revoke", "[webchat][auth][cli]") {
  gateway_fixture g(false, 0ms, invite_settings());

  auto [invited, out] = sg(g, {"webchat", "invite", "--name", "Ada", "--rooms", "lobby,dev", "--expires", "2d",
                               "--admin"});
  INFO(out);
  REQUIRE(invited == 0);
  CHECK(after(out, "name        ") == "Ada");
  CHECK(after(out, "rooms       ") == "lobby,dev");
  CHECK(after(out, "admin       ") == "yes");
  CHECK(contains(out, "works once"));
  CHECK(contains(out, "set --public-url"));  // the link names 127.0.0.1
  const auto link = after(out, "link        ");
  const auto hash = link.find("/webchat/signin#");
  REQUIRE(hash != npos);
  const auto token = link.substr(hash + 16);
  const auto invite_id = after(out, "invite_id   ");
  CHECK(invite_id == sha256_hex(token).substr(0, 16));
  const auto ttl = std::stol(g.redis.cli({"TTL", "webchat:invite:" + sha256_hex(token)}));
  CHECK(ttl > 2 * 86400);

  // The printed link signs in once.
  const auto signed_in = redeem(g, token);
  REQUIRE(signed_in.status == 201);
  const auto session = session_token(signed_in);
  CHECK(redeem(g, token).status == 410);

  auto [pending_status, pending_out] = sg(g, {"webchat", "invite", "--name", "Bob", "--json"});
  REQUIRE(pending_status == 0);
  CHECK(contains(pending_out, R"("state":"pending")"));

  auto [listed, table] = sg(g, {"webchat", "list"});
  INFO(table);
  REQUIRE(listed == 0);
  CHECK(contains(table, "INVITE"));
  CHECK(contains(table, "SESSION"));
  CHECK(contains(table, invite_id));
  CHECK(contains(table, "used"));
  CHECK(contains(table, "pending"));
  CHECK(contains(table, sha256_hex(session).substr(0, 16)));
  auto [listed_json, json_out] = sg(g, {"webchat", "list", "--json"});
  REQUIRE(listed_json == 0);
  CHECK(contains(json_out, R"("invites":[)"));
  CHECK(contains(json_out, R"("sessions":[)"));

  // By session id: the browser's socket closes.
  signed_in_client tab;
  tab.connect(g.port(), session);
  auto [revoked, revoke_out] = sg(g, {"webchat", "revoke", sha256_hex(session).substr(0, 16)});
  INFO(revoke_out);
  CHECK(revoked == 0);
  CHECK(contains(revoke_out, "revoked session"));
  CHECK(tab.time_to_close(5s).has_value());

  // By name: Bob's pending invite.
  auto [by_name, name_out] = sg(g, {"webchat", "revoke", "Bob"});
  INFO(name_out);
  CHECK(by_name == 0);
  CHECK(contains(name_out, "revoked Bob: 0 sessions, 1 pending invites"));

  auto [unknown, unknown_out] = sg(g, {"webchat", "revoke", "Nobody"});
  CHECK(unknown == 1);
  CHECK(contains(unknown_out, "name_not_found"));
  auto [bad_duration, bad_out] = sg(g, {"webchat", "invite", "--name", "Cy", "--expires", "soon"});
  CHECK(bad_duration == 2);
  CHECK(contains(bad_out, "--expires"));
  auto [no_name, no_name_out] = sg(g, {"webchat", "invite"});
  CHECK(no_name == 2);
  CHECK(contains(no_name_out, "--name"));
}

TEST_CASE("the web chat's auth none is refused on a host that is not loopback", "[webchat][auth][process]") {
  auto [refused, out] = run_process({STARGAZER_BINARY, "--http-host", "0.0.0.0", "--webchat-auth", "none", "config",
                                     "print"});
  CHECK(refused == 2);
  CHECK(contains(out, "--webchat-auth"));
  auto [auto_status, auto_out] = run_process({STARGAZER_BINARY, "--http-host", "0.0.0.0", "config", "print"});
  CHECK(auto_status == 0);
  CHECK(contains(auto_out, "webchat-auth = \"auto\""));
  auto [loopback, loopback_out] =
      run_process({STARGAZER_BINARY, "--http-host", "127.0.0.1", "--webchat-auth", "none", "config", "print"});
  CHECK(loopback == 0);
}
