#pragma once
// Helpers for tests of the Redis platform's REST API over raw HTTP.

#include "gateway_fixture.hpp"
#include "raw_http.hpp"

#include <catch2/catch.hpp>
#include <rapidjson/document.h>

#include <string>

namespace stargazer::test {

inline const std::string admin = std::string("Authorization: Bearer ") + gateway_fixture::admin_key + "\r\n";

inline std::string bearer(const std::string& key) { return "Authorization: Bearer " + key + "\r\n"; }

inline rapidjson::Document json_of(const raw_response& r) {
  rapidjson::Document d;
  d.Parse(r.body.c_str(), r.body.size());
  INFO(r.raw);
  REQUIRE_FALSE(d.HasParseError());
  return d;
}

inline raw_response call(std::uint16_t port, const std::string& method, const std::string& target,
                         const std::string& headers, const std::string& body = "") {
  return http_request(port, method, target, body, headers);
}

struct created_instance {
  std::string id;
  std::string key;
};

// Creates an instance with the admin key; the test fails unless it answers 201.
inline created_instance create_instance(gateway_fixture& g, const std::string& body = "{}") {
  auto r = call(g.port(), "POST", "/redis-platform/instances", admin, body);
  INFO(r.raw);
  REQUIRE(r.status == 201);
  auto d = json_of(r);
  return {d["instance_id"].GetString(), d["api_key"].GetString()};
}

// A process test's turn: creates an instance with the admin key ("admin-key", as the tests
// start the binary) and injects one message with wait=true; the response body.
inline std::string inject_and_wait(std::uint16_t port, const std::string& text) {
  auto created = http_request(port, "POST", "/redis-platform/instances", "{}", "Authorization: Bearer admin-key\r\n");
  REQUIRE(created.status == 201);
  auto d = json_of(created);
  const std::string id = d["instance_id"].GetString(), key = d["api_key"].GetString();
  auto r = http_request(port, "POST", "/redis-platform/instances/" + id + "/messages?wait=true&timeout=20",
                        R"({"text":")" + text + R"(","user_id":"u1","user_name":"Ada"})", bearer(key));
  INFO(r.raw);
  CHECK(r.status == 200);
  return r.body;
}

}  // namespace stargazer::test
