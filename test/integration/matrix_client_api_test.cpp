// The Matrix Client-Server API client against the Matrix test homeserver
// (test/support/matrix/homeserver.py).

#include "stargazer/core/strings.hpp"
#include "stargazer/platform/matrix/client_api.hpp"
#include "stargazer/platform/matrix/sync_events.hpp"

#include "child_process.hpp"
#include "matrix_server.hpp"
#include "raw_http.hpp"
#include "run_coro.hpp"

#include <catch2/catch.hpp>
#include <rapidjson/document.h>

#include <csignal>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

using namespace stargazer::test;
using namespace std::chrono_literals;
namespace mx = stargazer::platform::matrix;

namespace {

using homeserver = matrix_test_server;

template <class T>
const T& value(const mx::api_result<T>& r) {
  if (!mx::ok(r)) FAIL("API error: " << mx::error_of(r).to_string());
  return std::get<T>(r);
}

const std::string bot = "@bot:localhost";
const std::string alice = "@alice:localhost";

}  // namespace

TEST_CASE("matrix client_api: login, sync, send, ephemeral, media, pagination", "[matrix][integration]") {
  homeserver hs;
  hs.user("bot", "botpw");
  hs.user("alice", "alicepw");
  boost::asio::io_context io;
  mx::client_api api(io.get_executor(), hs.url());

  // Login with a fixed device id, then whoami.
  const auto login = value(run_coro(io, api.login_password("bot", "botpw", "STARGAZER1")));
  CHECK(login.user_id == bot);
  CHECK(login.device_id == "STARGAZER1");
  CHECK(!login.access_token.empty());
  CHECK(api.access_token() == login.access_token);
  const auto me = value(run_coro(io, api.whoami()));
  CHECK(me.user_id == bot);
  CHECK(me.device_id == "STARGAZER1");

  // A wrong password is a 403 M_FORBIDDEN, not an auth failure of the token.
  {
    mx::client_api other(io.get_executor(), hs.url());
    auto bad = run_coro(io, other.login_password("bot", "nope"));
    REQUIRE(!mx::ok(bad));
    CHECK(mx::error_of(bad).status == 403);
    CHECK(mx::error_of(bad).errcode == "M_FORBIDDEN");
    CHECK(!mx::is_auth_failure(mx::error_of(bad)));
  }

  const auto filter_id = value(run_coro(io, api.upload_filter(bot, mx::sync_filter_json(20))));
  CHECK(!filter_id.empty());

  const auto room_id = hs.room(alice, bot);
  const auto first_id = hs.post(room_id, alice, "hello bot");

  // Initial sync: the human's message decodes.
  const auto body = value(run_coro(io, api.sync("", filter_id, 0ms, false)));
  auto decoded = mx::decode_sync(body, bot);
  REQUIRE(std::holds_alternative<mx::sync_batch>(decoded));
  auto batch = std::get<mx::sync_batch>(decoded);
  bool seen = false;
  for (const auto& r : batch.joined)
    if (r.room_id == room_id)
      for (const auto& ev : r.events)
        if (const auto* m = std::get_if<mx::message_event>(&ev))
          if (m->event_id == first_id && m->sender == alice && m->body == "hello bot") seen = true;
  CHECK(seen);

  // Long poll: a message posted while the sync waits ends it.
  {
    std::thread human([&] {
      std::this_thread::sleep_for(300ms);
      hs.post(room_id, alice, "during the poll");
    });
    const auto started = std::chrono::steady_clock::now();
    const auto polled = run_coro(io, api.sync(batch.next_batch, filter_id, 10'000ms, false), 15s);
    human.join();
    const auto b = value(polled);
    CHECK(std::chrono::steady_clock::now() - started < 5s);
    CHECK(b.find("during the poll") != std::string::npos);
    auto d = mx::decode_sync(b, bot);
    REQUIRE(std::holds_alternative<mx::sync_batch>(d));
    batch = std::get<mx::sync_batch>(d);
  }

  // A long poll longer than the ordinary response deadline still completes.
  {
    mx::client_api_settings s;
    s.response_timeout = 300ms;
    mx::client_api quick(io.get_executor(), hs.url(), s);
    quick.set_access_token(login.access_token);
    const auto b = value(run_coro(io, quick.sync(batch.next_batch, filter_id, 1'000ms, false), 10s));
    CHECK(b.find("next_batch") != std::string::npos);
  }

  // send_event with the same txn id twice: one event, the same id.
  const std::string content = R"({"msgtype":"m.text","body":"reply from bot"})";
  const auto ev1 = value(run_coro(io, api.send_event(room_id, "m.room.message", "txn-1", content)));
  const auto ev2 = value(run_coro(io, api.send_event(room_id, "m.room.message", "txn-1", content)));
  CHECK(ev1 == ev2);
  CHECK(ev1.rfind('$', 0) == 0);
  {
    auto events = hs.control("GET", "/_test/rooms/" + stargazer::percent_encode(room_id) + "/events");
    REQUIRE(events.IsArray());
    int with_txn = 0;
    for (const auto& e : events.GetArray())
      if (e.HasMember("txn_id") && e["txn_id"].IsString() && std::string(e["txn_id"].GetString()) == "txn-1")
        ++with_txn;
    CHECK(with_txn == 1);
  }

  // Typing, receipt, presence.
  value(run_coro(io, api.set_typing(room_id, bot, true, 10s)));
  value(run_coro(io, api.send_receipt(room_id, first_id)));
  value(run_coro(io, api.set_presence(bot, "thinking")));
  {
    auto view = hs.room_view(room_id);
    bool typed = false;
    for (const auto& t : view["typing_log"].GetArray())
      if (std::string(t["user_id"].GetString()) == bot && t["typing"].GetBool()) typed = true;
    CHECK(typed);
    bool receipt = false;
    for (const auto& r : view["receipts"].GetArray())
      if (std::string(r["user_id"].GetString()) == bot && std::string(r["event_id"].GetString()) == first_id &&
          std::string(r["type"].GetString()) == "m.read")
        receipt = true;
    CHECK(receipt);
    auto state = hs.control("GET", "/_test/state");
    bool presence = false;
    for (const auto& u : state["users"].GetArray())
      if (std::string(u["user_id"].GetString()) == bot && u["presence"]["status_msg"].IsString() &&
          std::string(u["presence"]["status_msg"].GetString()) == "thinking" &&
          std::string(u["presence"]["presence"].GetString()) == "online")
        presence = true;
    CHECK(presence);
  }
  value(run_coro(io, api.set_typing(room_id, bot, false)));

  // Members and state.
  {
    const auto members = value(run_coro(io, api.joined_members(room_id)));
    CHECK(members.size() == 2);
    CHECK(members.count(bot) == 1);
    CHECK(members.count(alice) == 1);
    const auto name = value(run_coro(io, api.room_state(room_id, "m.room.name", "")));
    CHECK(name.find("\"Test\"") != std::string::npos);
    auto missing = run_coro(io, api.room_state(room_id, "m.room.topic", ""));
    REQUIRE(!mx::ok(missing));
    CHECK(mx::error_of(missing).status == 404);
    CHECK(mx::error_of(missing).errcode == "M_NOT_FOUND");
  }

  // Upload and download.
  {
    std::string data("binary\0data \xff\x01 payload", 22);
    const auto mxc = value(run_coro(io, api.upload(data, "a file.bin", "application/octet-stream")));
    CHECK(mxc.rfind("mxc://localhost/", 0) == 0);
    const auto media = value(run_coro(io, api.download(mxc, 1024)));
    CHECK(media.data == data);
    CHECK(media.content_type.find("application/octet-stream") != std::string::npos);
    auto small = run_coro(io, api.download(mxc, 4));
    REQUIRE(!mx::ok(small));
    CHECK(mx::error_of(small).message.find("larger than") != std::string::npos);
    auto bad = run_coro(io, api.download("https://example.org/x", 1024));
    REQUIRE(!mx::ok(bad));
    CHECK(mx::error_of(bad).status == 0);
  }

  // messages() paginates back through the room.
  {
    for (int i = 0; i < 5; ++i) hs.post(room_id, alice, "page" + std::to_string(i));
    std::string from;
    std::vector<std::string> bodies;
    for (int pages = 0; pages < 20; ++pages) {
      const auto page = value(run_coro(io, api.messages(room_id, from, "b", 2)));
      rapidjson::Document d;
      d.Parse(page.c_str(), page.size());
      REQUIRE(d.IsObject());
      for (const auto& e : d["chunk"].GetArray())
        if (e.HasMember("content") && e["content"].HasMember("body") && e["content"]["body"].IsString())
          bodies.emplace_back(e["content"]["body"].GetString());
      if (!d.HasMember("end") || !d["end"].IsString()) break;
      from = d["end"].GetString();
    }
    REQUIRE(bodies.size() >= 7);
    CHECK(bodies[0] == "page4");
    CHECK(bodies[4] == "page0");
    CHECK(bodies.back() == "hello bot");
  }

  // join and leave.
  {
    const auto other_room = hs.room(alice, alice);
    hs.control("POST", "/_test/rooms/" + stargazer::percent_encode(other_room) + "/membership",
               R"({"user_id":")" + bot + R"(","membership":"invite","sender":")" + alice + R"("})");
    CHECK(value(run_coro(io, api.join(other_room))) == other_room);
    value(run_coro(io, api.leave(other_room)));
    auto view = hs.room_view(other_room);
    CHECK(std::string(view["members"][bot.c_str()].GetString()) == "leave");
  }

  // The token only ever went as a Bearer header.
  {
    auto rec = hs.control("GET", "/_test/requests?since=0&path=_matrix");
    int authed = 0;
    for (const auto& r : rec["records"].GetArray()) {
      if (r.HasMember("auth") && r["auth"].IsString()) {
        CHECK(std::string(r["auth"].GetString()) == "header");
        ++authed;
      }
    }
    CHECK(authed > 10);
  }
}

TEST_CASE("matrix client_api: 429, auth failures, transport errors", "[matrix][integration]") {
  homeserver hs;
  hs.user("bot", "botpw");
  hs.user("alice", "alicepw");
  boost::asio::io_context io;
  mx::client_api api(io.get_executor(), hs.url());
  const auto login = value(run_coro(io, api.login_password("bot", "botpw", "DEV")));
  const auto room_id = hs.room(alice, bot);

  SECTION("a send waits out forced 429s and posts once") {
    hs.control("POST", "/_test/force", R"({"path":"/send/","method":"PUT","count":2,"retry_after_ms":300})");
    const auto started = std::chrono::steady_clock::now();
    const auto id = value(run_coro(io, api.send_event(room_id, "m.room.message", "t429",
                                                      R"({"msgtype":"m.text","body":"under pressure"})")));
    CHECK(std::chrono::steady_clock::now() - started >= 550ms);
    CHECK(id.rfind('$', 0) == 0);
    auto events = hs.control("GET", "/_test/rooms/" + stargazer::percent_encode(room_id) + "/events");
    int n = 0;
    for (const auto& e : events.GetArray())
      if (e.HasMember("content") && e["content"].HasMember("body") && e["content"]["body"].IsString() &&
          std::string(e["content"]["body"].GetString()) == "under pressure")
        ++n;
    CHECK(n == 1);
    auto rec = hs.control("GET", "/_test/requests?since=0&path=/send/");
    CHECK(rec["records"].Size() == 3);
  }

  SECTION("a send gives up after send_429_retries") {
    mx::client_api_settings s;
    s.send_429_retries = 1;
    mx::client_api limited(io.get_executor(), hs.url(), s);
    limited.set_access_token(login.access_token);
    hs.control("POST", "/_test/force", R"({"path":"/send/","method":"PUT","count":5,"retry_after_ms":50})");
    auto r = run_coro(io, limited.send_event(room_id, "m.room.message", "tx", R"({"msgtype":"m.text","body":"x"})"));
    REQUIRE(!mx::ok(r));
    CHECK(mx::is_rate_limited(mx::error_of(r)));
  }

  SECTION("other calls return the 429 with its delay") {
    hs.control("POST", "/_test/force", R"({"path":"whoami","count":1,"retry_after_ms":1500})");
    auto r = run_coro(io, api.whoami());
    REQUIRE(!mx::ok(r));
    const auto& e = mx::error_of(r);
    CHECK(e.status == 429);
    CHECK(e.errcode == "M_LIMIT_EXCEEDED");
    REQUIRE(e.retry_after);
    CHECK(*e.retry_after == 1500ms);
    CHECK(mx::ok(run_coro(io, api.whoami())));
  }

  SECTION("a revoked or missing token is an auth failure") {
    hs.control("POST", "/_test/tokens/revoke", R"({"access_token":")" + login.access_token + R"("})");
    auto r = run_coro(io, api.whoami());
    REQUIRE(!mx::ok(r));
    CHECK(mx::error_of(r).status == 401);
    CHECK(mx::error_of(r).errcode == "M_UNKNOWN_TOKEN");
    CHECK(mx::is_auth_failure(mx::error_of(r)));
    api.set_access_token("");
    auto missing = run_coro(io, api.sync("", "", 0ms, false));
    REQUIRE(!mx::ok(missing));
    CHECK(mx::error_of(missing).errcode == "M_MISSING_TOKEN");
    CHECK(mx::is_auth_failure(mx::error_of(missing)));
  }

  SECTION("a non-Matrix error body keeps its status and an excerpt") {
    hs.control("POST", "/_test/force", R"({"path":"whoami","count":1,"garbage":"html_502"})");
    auto r = run_coro(io, api.whoami());
    REQUIRE(!mx::ok(r));
    CHECK(mx::error_of(r).status == 502);
    CHECK(mx::error_of(r).errcode.empty());
    CHECK(!mx::error_of(r).message.empty());
  }

  SECTION("a 200 that is not JSON is a malformed response") {
    hs.control("POST", "/_test/force", R"({"path":"/send/","count":1,"garbage":"not_json"})");
    auto r = run_coro(io, api.send_event(room_id, "m.room.message", "g1", R"({"msgtype":"m.text","body":"x"})"));
    REQUIRE(!mx::ok(r));
    CHECK(mx::error_of(r).status == 200);
    CHECK(mx::error_of(r).message.find("malformed response") == 0);
  }

  SECTION("connection refused is status 0") {
    mx::client_api_settings s;
    s.connect_timeout = 2s;
    mx::client_api nowhere(io.get_executor(), "http://127.0.0.1:1", s);
    auto r = run_coro(io, nowhere.whoami());
    REQUIRE(!mx::ok(r));
    CHECK(mx::is_transport_error(mx::error_of(r)));
    CHECK(!mx::error_of(r).message.empty());
  }
}
