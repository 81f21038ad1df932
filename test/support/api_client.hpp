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

}  // namespace stargazer::test
