// The Redis platform's REST API over real HTTP, with a real Redis and an echo worker on the bus.

#include "api_client.hpp"
#include "gateway_fixture.hpp"
#include "raw_http.hpp"

#include "stargazer/core/strings.hpp"

#include <catch2/catch.hpp>
#include <rapidjson/document.h>

#include <future>
#include <thread>

using namespace stargazer;
using namespace stargazer::test;

namespace {

}  // namespace

TEST_CASE("instances: create, list, get, update, delete, keys are stored as digests", "[api]") {
  gateway_fixture g(false);
  auto inst = create_instance(g, R"({"display_name":"Support bot","metadata":{"team":"blue"}})");
  CHECK(inst.id.size() == 16);
  CHECK(inst.key.size() > 32);
  // The plaintext key is nowhere in Redis.
  const auto meta = g.redis.cli({"HGETALL", "redis_platform:meta:" + inst.id});
  CHECK(meta.find(inst.key) == std::string::npos);
  CHECK(meta.find("api_key_sha256") != std::string::npos);

  auto list = call(g.port(), "GET", "/redis-platform/instances", admin);
  CHECK(list.status == 200);
  CHECK(json_of(list)["instances"].Size() == 1);

  auto got = call(g.port(), "GET", "/redis-platform/instances/" + inst.id, bearer(inst.key));
  CHECK(got.status == 200);
  auto d = json_of(got);
  CHECK(std::string(d["display_name"].GetString()) == "Support bot");
  CHECK(std::string(d["metadata"]["team"].GetString()) == "blue");
  CHECK_FALSE(d.HasMember("api_key"));

  auto patched = call(g.port(), "PATCH", "/redis-platform/instances/" + inst.id, bearer(inst.key),
                      R"({"display_name":"Renamed","metadata":{"team":"red"}})");
  CHECK(patched.status == 200);
  CHECK(std::string(json_of(patched)["display_name"].GetString()) == "Renamed");

  CHECK(call(g.port(), "POST", "/redis-platform/instances", admin, R"({"instance_id":")" + inst.id + "\"}").status ==
        409);

  // What the worker and the notes tool keep for the instance's channel goes with it.
  g.redis.cli({"HSET", "sg:notes:redis:" + inst.id, "n1", "the deploy is on Friday"});
  g.redis.cli({"SET", "sg:channel:redis:" + inst.id + ":mode", "always"});
  g.redis.cli({"SET", "sg:channel:redis:" + inst.id + ":forgotten", "1796190000"});

  auto deleted = call(g.port(), "DELETE", "/redis-platform/instances/" + inst.id, admin);
  CHECK(deleted.status == 200);
  CHECK(g.redis.cli({"EXISTS", "redis_platform:meta:" + inst.id}) == "0");
  CHECK(g.redis.cli({"EXISTS", "sg:notes:redis:" + inst.id, "sg:channel:redis:" + inst.id + ":mode",
                     "sg:channel:redis:" + inst.id + ":forgotten"}) == "0");
  CHECK(g.redis.cli({"SISMEMBER", "redis_platform:instances", inst.id}) == "0");
  CHECK(call(g.port(), "GET", "/redis-platform/instances/" + inst.id, admin).status == 404);
  CHECK(call(g.port(), "GET", "/redis-platform/instances/" + inst.id, bearer(inst.key)).status == 403);
}

TEST_CASE("users: register, list, get, delete, a closed roster refuses strangers", "[api]") {
  gateway_fixture g;
  auto inst = create_instance(g);
  const auto base = "/redis-platform/instances/" + inst.id;
  auto reg = call(g.port(), "POST", base + "/users", bearer(inst.key), R"({"user_id":"u1","display_name":"Ada"})");
  CHECK(reg.status == 201);
  CHECK(json_of(call(g.port(), "GET", base + "/users", bearer(inst.key)))["users"].Size() == 1);
  CHECK(call(g.port(), "GET", base + "/users/u1", bearer(inst.key)).status == 200);
  CHECK(call(g.port(), "GET", base + "/users/nobody", bearer(inst.key)).status == 404);

  auto stranger = call(g.port(), "POST", base + "/messages", bearer(inst.key), R"({"text":"hi","user_id":"u2","user_name":"Eve"})");
  CHECK(stranger.status == 403);
  CHECK(stranger.body.find("user_not_registered") != std::string::npos);
  auto member = call(g.port(), "POST", base + "/messages", bearer(inst.key), R"({"text":"hi","user_id":"u1"})");
  CHECK(member.status == 202);

  CHECK(call(g.port(), "DELETE", base + "/users/u1", bearer(inst.key)).status == 200);
  CHECK(call(g.port(), "DELETE", base + "/users/u1", bearer(inst.key)).status == 404);
  // Open again: a name is now required.
  CHECK(call(g.port(), "POST", base + "/messages", bearer(inst.key), R"({"text":"hi","user_id":"u3"})").status == 400);
}

TEST_CASE("inject with wait=true returns the turn's replies, text and files", "[api]") {
  gateway_fixture g;
  auto inst = create_instance(g);
  const auto base = "/redis-platform/instances/" + inst.id;
  const std::string body = R"({"text":"hello","user_id":"u1","user_name":"Ada","attachments":[{"data":")" +
                           base64_encode("file bytes") + R"(","mimetype":"text/plain","filename":"notes.txt"}]})";
  auto r = call(g.port(), "POST", base + "/messages?wait=true&timeout=10", bearer(inst.key), body);
  INFO(r.raw);
  REQUIRE(r.status == 200);
  auto d = json_of(r);
  CHECK(d["complete"].GetBool());
  REQUIRE(d["responses"].Size() == 2);
  CHECK(std::string(d["responses"][0]["type"].GetString()) == "message");
  CHECK(std::string(d["responses"][0]["text"].GetString()) == "echo: hello");
  CHECK(std::string(d["responses"][1]["type"].GetString()) == "file");
  CHECK(d["responses"][1]["size"].GetInt() == 10);
  const std::string url = d["responses"][1]["url"].GetString();
  auto file = http_get(g.port(), url);
  CHECK(file.status == 200);
  CHECK(file.body == "file bytes");
  CHECK(file.headers.find("text/plain") != std::string::npos);
  const auto file_id = url.substr(std::string("/redis-platform/files/").size(), 32);
  const auto ttl = std::stol(g.redis.cli({"TTL", "redis:platform"}) == "" ? "0" : g.redis.cli({"TTL", "redis_platform:file:" + file_id}));
  CHECK(ttl > 86000);
  CHECK(ttl <= 86400);
  CHECK(http_get(g.port(), "/redis-platform/files/" + file_id + "/other.txt").status == 404);
  g.redis.cli({"DEL", "redis_platform:file:" + file_id});  // expired
  CHECK(http_get(g.port(), url).status == 404);

  // History holds both sides, newest first.
  auto h = call(g.port(), "GET", base + "/messages?limit=10", bearer(inst.key));
  CHECK(h.status == 200);
  auto hd = json_of(h);
  REQUIRE(hd["messages"].Size() >= 2);
  CHECK(hd["messages"][0]["is_bot"].GetBool());
}

TEST_CASE("wait=true past its timeout returns 202 with the message id", "[api]") {
  gateway_fixture g(false);  // no worker: nobody answers
  auto inst = create_instance(g);
  const auto started = std::chrono::steady_clock::now();
  auto r = call(g.port(), "POST", "/redis-platform/instances/" + inst.id + "/messages?wait=true&timeout=1",
                bearer(inst.key), R"({"text":"anyone?","user_id":"u1","user_name":"Ada"})");
  CHECK(r.status == 202);
  auto d = json_of(r);
  CHECK_FALSE(d["complete"].GetBool());
  CHECK(std::string(d["message_id"].GetString()).size() == 32);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(3));
}

TEST_CASE("20 concurrent waits on one instance each get their own reply", "[api]") {
  gateway_fixture g(true, std::chrono::milliseconds(20));
  auto inst = create_instance(g);
  std::vector<std::future<raw_response>> calls;
  for (int i = 0; i < 20; ++i)
    calls.push_back(std::async(std::launch::async, [&, i] {
      return call(g.port(), "POST", "/redis-platform/instances/" + inst.id + "/messages?wait=true&timeout=20",
                  bearer(inst.key), R"({"text":"q)" + std::to_string(i) + R"(","user_id":"u1","user_name":"Ada"})");
    }));
  for (int i = 0; i < 20; ++i) {
    auto r = calls[static_cast<std::size_t>(i)].get();
    INFO(r.raw);
    REQUIRE(r.status == 200);
    auto d = json_of(r);
    REQUIRE(d["responses"].Size() == 1);
    CHECK(std::string(d["responses"][0]["text"].GetString()) == "echo: q" + std::to_string(i));
  }
}

TEST_CASE("an Idempotency-Key retry returns the first result and injects nothing", "[api]") {
  gateway_fixture g;
  auto inst = create_instance(g);
  const auto target = "/redis-platform/instances/" + inst.id + "/messages?wait=true&timeout=10";
  const auto headers = bearer(inst.key) + "Idempotency-Key: order-42\r\n";
  auto first = call(g.port(), "POST", target, headers, R"({"text":"once","user_id":"u1","user_name":"Ada"})");
  auto second = call(g.port(), "POST", target, headers, R"({"text":"once","user_id":"u1","user_name":"Ada"})");
  CHECK(first.status == 200);
  CHECK(second.status == 200);
  CHECK(first.body == second.body);
  CHECK(second.headers.find("Idempotent-Replayed: true") != std::string::npos);
  CHECK(g.redis.cli({"XLEN", "sg:stream:inbound"}) == "1");
}

TEST_CASE("an instance route answers 503 when Redis answers with an error, never 404 or 403", "[api]") {
  gateway_fixture g;
  auto inst = create_instance(g);
  const auto target = "/redis-platform/instances/" + inst.id + "/messages";
  const std::string body = R"({"text":"hi","user_id":"u1","user_name":"Ada"})";
  // A Redis restarting answers -LOADING; a key of the wrong type gives the same kind of
  // error reply (WRONGTYPE) on demand.
  g.redis.cli({"RENAME", "redis_platform:instances", "kept-instances"});
  g.redis.cli({"SET", "redis_platform:instances", "not a set"});
  auto as_admin = call(g.port(), "POST", target, admin, body);
  INFO(as_admin.raw);
  CHECK(as_admin.status == 503);
  g.redis.cli({"RENAME", "kept-instances", "redis_platform:instances"});

  g.redis.cli({"RENAME", "redis_platform:meta:" + inst.id, "kept-meta"});
  g.redis.cli({"SET", "redis_platform:meta:" + inst.id, "not a hash"});
  auto with_key = call(g.port(), "POST", target, bearer(inst.key), body);
  INFO(with_key.raw);
  CHECK(with_key.status == 503);
  g.redis.cli({"RENAME", "kept-meta", "redis_platform:meta:" + inst.id});

  CHECK(call(g.port(), "POST", target, bearer(inst.key), body).status == 202);
  CHECK(g.redis.cli({"XLEN", "sg:stream:inbound"}) == "1");
}

TEST_CASE("events stream over SSE and resume from Last-Event-ID", "[api]") {
  gateway_fixture g;
  auto inst = create_instance(g);
  const auto base = "/redis-platform/instances/" + inst.id;
  auto first = call(g.port(), "POST", base + "/messages?wait=true&timeout=10", bearer(inst.key),
                    R"({"text":"one","user_id":"u1","user_name":"Ada"})");
  REQUIRE(first.status == 200);
  // Resume from the beginning: everything so far, with ids.
  auto sse = raw_http(g.port(),
                      "GET " + base + "/events HTTP/1.1\r\nHost: x\r\n" + bearer(inst.key) + "Last-Event-ID: 0-0\r\n\r\n",
                      1500);
  CHECK(sse.status == 200);
  CHECK(sse.headers.find("text/event-stream") != std::string::npos);
  CHECK(sse.body.find("event: message") != std::string::npos);
  CHECK(sse.body.find("echo: one") != std::string::npos);
  CHECK(sse.body.find("event: turn_complete") != std::string::npos);
  const auto id_pos = sse.body.find("id: ");
  REQUIRE(id_pos != std::string::npos);
  const auto first_id = sse.body.substr(id_pos + 4, sse.body.find('\n', id_pos) - id_pos - 4);
  // The reply and its turn_complete are one stream entry: the reply comes without an id and
  // the turn_complete carries the entry's, so resuming from it never skips the end of a turn.
  CHECK(g.redis.cli({"XLEN", "redis_platform:events:" + inst.id}) == "1");
  CHECK(sse.body.find("event: message") < id_pos);
  CHECK(sse.body.compare(id_pos, 4 + first_id.size() + 21, "id: " + first_id + "\nevent: turn_complete") == 0);

  // A live stream sees a later reply as it is delivered.
  std::future<raw_response> live = std::async(std::launch::async, [&] {
    return raw_http(g.port(), "GET " + base + "/events HTTP/1.1\r\nHost: x\r\n" + bearer(inst.key) + "\r\n", 2500);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  call(g.port(), "POST", base + "/messages?wait=true&timeout=10", bearer(inst.key),
       R"({"text":"two","user_id":"u1","user_name":"Ada"})");
  auto live_body = live.get().body;
  CHECK(live_body.find("echo: two") != std::string::npos);
  CHECK(live_body.find("echo: one") == std::string::npos);

  // Resuming after the first event skips it.
  auto resumed = raw_http(
      g.port(), "GET " + base + "/events HTTP/1.1\r\nHost: x\r\n" + bearer(inst.key) + "Last-Event-ID: " + first_id + "\r\n\r\n",
      1500);
  CHECK(resumed.body.find("echo: one") == std::string::npos);
  CHECK(resumed.body.find("echo: two") != std::string::npos);
}
