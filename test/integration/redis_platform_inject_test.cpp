// The REST inject's fields from the original (is_addressed, channel_name, message_id,
// extra, reactions) and the roster's admin flag: what reaches the inbound envelope, and
// what is refused, over real HTTP against a real Redis (gateway_fixture, no worker).

#include "api_client.hpp"
#include "fast_redis.hpp"
#include "gateway_fixture.hpp"
#include "inbound_stream.hpp"
#include "run_coro.hpp"

#include "stargazer/bus/envelope.hpp"
#include "stargazer/platform/message_cache.hpp"

#include <catch2/catch.hpp>
#include <rapidjson/document.h>

#include <future>
#include <string>
#include <vector>

using namespace stargazer;
using namespace stargazer::test;

namespace {

// A JSON error body with this status and code whose message contains `mentions`.
void check_error(const raw_response& r, int status, const std::string& code, const std::string& mentions) {
  INFO(r.raw);
  CHECK(r.status == status);
  rapidjson::Document d;
  d.Parse(r.body.c_str(), r.body.size());
  REQUIRE_FALSE(d.HasParseError());
  REQUIRE(d.IsObject());
  REQUIRE(d.HasMember("error"));
  CHECK(std::string(d["error"]["code"].GetString()) == code);
  CHECK(std::string(d["error"]["message"].GetString()).find(mentions) != std::string::npos);
}

std::string str(const rapidjson::Value& v, const char* name) { return v[name].GetString(); }

}  // namespace

TEST_CASE("inject: the original's fields reach the inbound envelope", "[api][inject]") {
  gateway_fixture g(false);
  const auto inst = create_instance(g);
  const auto path = "/redis-platform/instances/" + inst.id + "/messages";

  const auto r = call(g.port(), "POST", path, bearer(inst.key),
                      R"({"text":"just so you know","user_id":"u1","user_name":"Ada","is_addressed":false,)"
                      R"("channel_name":"Support desk","message_id":"ticket-42:m1","reactions":"thumbs up x2",)"
                      R"("extra":{"page":"checkout","order":42,"tags":["a","b"],"vip":true,"none":null,"nested":{"k":1}}})");
  INFO(r.raw);
  REQUIRE(r.status == 202);
  CHECK(str(json_of(r), "message_id") == "ticket-42:m1");

  const auto envelopes = inbound_envelopes(g.redis.url());
  REQUIRE(envelopes.size() == 1);
  const auto& e = envelopes[0];
  CHECK_FALSE(e.is_addressed);
  CHECK(e.room_name == "Support desk");
  CHECK(e.message_id == "ticket-42:m1");
  CHECK(e.reactions == "thumbs up x2");
  CHECK(e.member_roles.empty());  // an open instance: nobody is privileged
  // Strings as they are, every other JSON value as its compact JSON text.
  const std::map<std::string, std::string> extra{{"page", "checkout"}, {"order", "42"},       {"tags", R"(["a","b"])"},
                                                 {"vip", "true"},      {"none", "null"},      {"nested", R"({"k":1})"}};
  CHECK(e.extra == extra);

  // The caller's id is the history's id too.
  const auto history = json_of(call(g.port(), "GET", path, bearer(inst.key)));
  REQUIRE(history["messages"].Size() == 1);
  CHECK(str(history["messages"][0], "message_id") == "ticket-42:m1");
  CHECK(g.redis.cli({"HGET", "sg:msg:redis:" + inst.id + ":ticket-42:m1", "text"}) == "just so you know");
}

TEST_CASE("inject: without the new fields the envelope has the defaults", "[api][inject]") {
  gateway_fixture g(false);
  const auto inst = create_instance(g);
  const auto r = call(g.port(), "POST", "/redis-platform/instances/" + inst.id + "/messages", bearer(inst.key),
                      R"({"text":"hello","user_id":"u1","user_name":"Ada","is_addressed":null,"extra":null})");
  REQUIRE(r.status == 202);
  const auto envelopes = inbound_envelopes(g.redis.url());
  REQUIRE(envelopes.size() == 1);
  const auto& e = envelopes[0];
  CHECK(e.is_addressed);
  CHECK(e.room_name.empty());
  CHECK(e.message_id.size() == 32);
  CHECK(str(json_of(r), "message_id") == e.message_id);
  CHECK(e.extra.empty());
  CHECK(e.reactions.empty());
  // The generated id is recorded, so no caller can take it later.
  CHECK(g.redis.cli({"ZSCORE", "redis_platform:message_ids:" + inst.id, e.message_id}) != "");
}

TEST_CASE("inject: a message id is used once per instance, 409 names it", "[api][inject]") {
  gateway_fixture g(false);
  const auto a = create_instance(g);
  const auto b = create_instance(g);
  const auto body = R"({"text":"hi","user_id":"u1","user_name":"Ada","message_id":"m-1"})";
  const auto path_a = "/redis-platform/instances/" + a.id + "/messages";
  REQUIRE(call(g.port(), "POST", path_a, bearer(a.key), body).status == 202);

  const auto again = call(g.port(), "POST", path_a, bearer(a.key), body);
  check_error(again, 409, "message_id_reused", "'m-1'");
  CHECK(inbound_envelopes(g.redis.url()).size() == 1);  // nothing injected the second time
  CHECK(json_of(call(g.port(), "GET", path_a, bearer(a.key)))["messages"].Size() == 1);

  // Another instance has ids of its own.
  CHECK(call(g.port(), "POST", "/redis-platform/instances/" + b.id + "/messages", bearer(b.key), body).status == 202);

  // A generated id cannot be taken by a caller either.
  const auto generated = str(json_of(call(g.port(), "POST", path_a, bearer(a.key),
                                          R"({"text":"x","user_id":"u1","user_name":"Ada"})")),
                             "message_id");
  check_error(call(g.port(), "POST", path_a, bearer(a.key),
                   R"({"text":"y","user_id":"u1","user_name":"Ada","message_id":")" + generated + "\"}"),
              409, "message_id_reused", generated);

  // The ids go with the instance.
  REQUIRE(call(g.port(), "DELETE", "/redis-platform/instances/" + a.id, admin).status == 200);
  CHECK(g.redis.cli({"EXISTS", "redis_platform:message_ids:" + a.id}) == "0");
}

TEST_CASE("inject: the ids remembered are bounded by the history cap, not by traffic", "[api][inject]") {
  gateway_fixture g(false);
  const auto inst = create_instance(g);
  platform::message_cache::keep_per_channel(3);
  struct restore_default_cap {
    ~restore_default_cap() { platform::message_cache::keep_per_channel(1000); }
  } restore;  // for the tests after this one, even when this one fails
  const auto path = "/redis-platform/instances/" + inst.id + "/messages";
  const auto send = [&](const std::string& id) {
    return call(g.port(), "POST", path, bearer(inst.key),
                R"({"text":"hi","user_id":"u1","user_name":"Ada","message_id":")" + id + "\"}");
  };
  for (int i = 0; i < 9; ++i) REQUIRE(send("m-" + std::to_string(i)).status == 202);
  REQUIRE(call(g.port(), "POST", path, bearer(inst.key), R"({"text":"x","user_id":"u1","user_name":"Ada"})").status ==
          202);
  const auto ids_key = "redis_platform:message_ids:" + inst.id;
  CHECK(g.redis.cli({"ZCARD", ids_key}) == "6");  // twice the cap
  INFO(g.redis.cli({"ZRANGE", ids_key, "0", "-1", "WITHSCORES"}));
  check_error(send("m-4"), 409, "message_id_reused", "'m-4'");  // among the newest: refused
  CHECK(send("m-0").status == 202);  // beyond the cap, like its message: free again
}

TEST_CASE("inject: of concurrent requests with one message id exactly one goes in", "[api][inject]") {
  gateway_fixture g(false);
  const auto inst = create_instance(g);
  const auto path = "/redis-platform/instances/" + inst.id + "/messages";
  std::vector<std::future<int>> requests;
  for (int i = 0; i < 8; ++i)
    requests.push_back(std::async(std::launch::async, [&, i] {
      return call(g.port(), "POST", path, bearer(inst.key),
                  R"({"user_id":"u1","user_name":"Ada","message_id":"same","text":"try )" + std::to_string(i) + "\"}")
          .status;
    }));
  int accepted = 0, refused = 0;
  for (auto& r : requests) {
    const auto status = r.get();
    if (status == 202) ++accepted;
    if (status == 409) ++refused;
  }
  CHECK(accepted == 1);
  CHECK(refused == 7);
  CHECK(inbound_envelopes(g.redis.url()).size() == 1);
}

TEST_CASE("inject: a retry with the Idempotency-Key is replayed, not refused for its message id", "[api][inject]") {
  gateway_fixture g(false);
  const auto inst = create_instance(g);
  const auto path = "/redis-platform/instances/" + inst.id + "/messages";
  const auto headers = bearer(inst.key) + "Idempotency-Key: k-1\r\n";
  const auto body = R"({"text":"hi","user_id":"u1","user_name":"Ada","message_id":"m-7"})";
  REQUIRE(call(g.port(), "POST", path, headers, body).status == 202);
  const auto retry = call(g.port(), "POST", path, headers, body);
  CHECK(retry.status == 202);
  CHECK(retry.headers.find("Idempotent-Replayed: true") != std::string::npos);
  CHECK(inbound_envelopes(g.redis.url()).size() == 1);
}

TEST_CASE("inject: bad types and sizes of the new fields are refused naming the field", "[api][inject]") {
  gateway_fixture g(false);
  const auto inst = create_instance(g);
  const auto path = "/redis-platform/instances/" + inst.id + "/messages";
  const std::string base = R"({"text":"hi","user_id":"u1","user_name":"Ada",)";
  const std::string big_extra = R"({"k":")" + std::string(4096, 'x') + "\"}";
  // 4096 bytes as compact JSON are allowed: {"k":"..."} is 8 bytes plus the value.
  const std::string full_extra = R"({"k":")" + std::string(4096 - 8, 'x') + "\"}";
  struct bad_case {
    const char* what;
    std::string member;
    int status;
    const char* code;
    const char* mentions;
  };
  const std::vector<bad_case> cases{
      {"is_addressed a string", R"("is_addressed":"no")", 400, "bad_field_type", "'is_addressed'"},
      {"is_addressed a number", R"("is_addressed":0)", 400, "bad_field_type", "'is_addressed'"},
      {"channel_name a number", R"("channel_name":5)", 400, "bad_field_type", "'channel_name'"},
      {"channel_name too long", R"("channel_name":")" + std::string(257, 'c') + "\"", 413, "field_too_long",
       "'channel_name'"},
      {"message_id a number", R"("message_id":7)", 400, "bad_field_type", "'message_id'"},
      {"message_id empty", R"("message_id":"")", 400, "bad_message_id", "'message_id'"},
      {"message_id with a space", R"("message_id":"a b")", 400, "bad_message_id", "'message_id'"},
      {"message_id too long", R"("message_id":")" + std::string(129, 'm') + "\"", 413, "field_too_long",
       "'message_id'"},
      {"extra a string", R"("extra":"x")", 400, "bad_field_type", "'extra'"},
      {"extra an array", R"("extra":[1,2])", 400, "bad_field_type", "'extra'"},
      {"extra over 4 KiB", R"("extra":)" + big_extra, 413, "field_too_long", "'extra'"},
      {"extra with an empty key", R"("extra":{"":1})", 400, "bad_extra_key", "'extra'"},
      {"extra with a long key", R"("extra":{")" + std::string(65, 'k') + R"(":1})", 400, "bad_extra_key", "'extra'"},
      {"reactions an object", R"("reactions":{})", 400, "bad_field_type", "'reactions'"},
      {"reactions too long", R"("reactions":")" + std::string(1025, 'r') + "\"", 413, "field_too_long",
       "'reactions'"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    check_error(call(g.port(), "POST", path, bearer(inst.key), base + c.member + "}"), c.status, c.code, c.mentions);
  }
  // Refused before anything was written.
  CHECK(inbound_envelopes(g.redis.url()).empty());
  CHECK(g.redis.cli({"EXISTS", "channel_msgs:redis:" + inst.id, "redis_platform:message_ids:" + inst.id}) == "0");

  // Exactly 4 KiB is allowed.
  CHECK(call(g.port(), "POST", path, bearer(inst.key), base + R"("extra":)" + full_extra + "}").status == 202);
  const auto envelopes = inbound_envelopes(g.redis.url());
  REQUIRE(envelopes.size() == 1);
  CHECK(envelopes[0].extra.at("k").size() == 4096 - 8);
}

TEST_CASE("inject: a roster entry with admin true marks the sender's envelopes with the admin role", "[api][inject]") {
  gateway_fixture g(false);
  const auto inst = create_instance(g);
  const auto base = "/redis-platform/instances/" + inst.id;
  const auto reg = call(g.port(), "POST", base + "/users", bearer(inst.key),
                        R"({"user_id":"boss","display_name":"Grace","admin":true})");
  REQUIRE(reg.status == 201);
  CHECK(json_of(reg)["admin"].GetBool());
  REQUIRE(call(g.port(), "POST", base + "/users", admin, R"({"user_id":"u2","display_name":"Bob"})").status == 201);
  CHECK_FALSE(json_of(call(g.port(), "GET", base + "/users/u2", admin))["admin"].GetBool());
  CHECK(json_of(call(g.port(), "GET", base + "/users/boss", admin))["admin"].GetBool());
  check_error(call(g.port(), "POST", base + "/users", admin, R"({"user_id":"u3","display_name":"C","admin":"yes"})"),
              400, "bad_field_type", "'admin'");

  REQUIRE(call(g.port(), "POST", base + "/messages", bearer(inst.key), R"({"text":"!quiet 10","user_id":"boss"})")
              .status == 202);
  REQUIRE(call(g.port(), "POST", base + "/messages", bearer(inst.key), R"({"text":"!quiet 10","user_id":"u2"})")
              .status == 202);
  const auto envelopes = inbound_envelopes(g.redis.url());
  REQUIRE(envelopes.size() == 2);
  CHECK(envelopes[0].username == "Grace");
  CHECK(envelopes[0].member_roles == std::vector<std::string>{"admin"});
  CHECK(envelopes[1].member_roles.empty());
}
