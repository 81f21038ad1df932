#include "stargazer/http/json_body.hpp"
#include "stargazer/core/json_value.hpp"
#include "stargazer/http/router.hpp"

#include "run_coro.hpp"

#include <catch2/catch.hpp>

using namespace stargazer::http;

namespace {

request make(method verb, std::string target, std::string body = {}) {
  request r;
  r.verb = verb;
  r.target = target;
  const auto q = target.find('?');
  r.path = target.substr(0, q);
  if (q != std::string::npos) r.query = target.substr(q + 1);
  r.body = std::move(body);
  return r;
}

response dispatch(const router& rt, request req) {
  boost::asio::io_context io;
  return stargazer::test::run_coro(io, rt.dispatch(req));
}

router sample_router() {
  router rt;
  rt.add(method::get, "/redis-platform/instances/{instance_id}", sync_handler([](request& r) {
           return response::json(200, "{\"id\":\"" + std::string(r.path_param("instance_id")) + "\"}");
         }));
  rt.add(method::delete_, "/redis-platform/instances/{instance_id}",
         sync_handler([](request&) { return response::json(204, ""); }));
  rt.add(method::get, "/redis-platform/instances/{instance_id}/users/{user_id}", sync_handler([](request& r) {
           return response::json(200, std::string(r.path_param("instance_id")) + "/" + std::string(r.path_param("user_id")));
         }));
  rt.add(method::post, "/echo", sync_handler([](request& r) {
           auto parsed = parse_json_object(r);
           if (auto* err = std::get_if<response>(&parsed)) return std::move(*err);
           return response::json(200, stargazer::json::to_string(std::get<rapidjson::Document>(parsed)));
         }));
  rt.add(method::get, "/boom", sync_handler([](request&) -> response { throw std::runtime_error("boom"); }));
  return rt;
}

}  // namespace

TEST_CASE("path parameters are captured and percent-decoded", "[router]") {
  auto rt = sample_router();
  auto res = dispatch(rt, make(method::get, "/redis-platform/instances/abc%20d/users/u1?x=1"));
  CHECK(res.status == 200);
  CHECK(res.body == "abc d/u1");
  auto one = dispatch(rt, make(method::get, "/redis-platform/instances/i-1"));
  CHECK(one.body == "{\"id\":\"i-1\"}");
}

TEST_CASE("unknown paths get 404 with a JSON error", "[router]") {
  auto rt = sample_router();
  auto res = dispatch(rt, make(method::get, "/nope"));
  CHECK(res.status == 404);
  CHECK(res.body.find("\"code\":\"not_found\"") != std::string::npos);
  // An empty capture does not match.
  CHECK(dispatch(rt, make(method::get, "/redis-platform/instances/")).status == 404);
}

TEST_CASE("a known path with the wrong method gets 405 and Allow", "[router]") {
  auto rt = sample_router();
  auto res = dispatch(rt, make(method::post, "/redis-platform/instances/x"));
  CHECK(res.status == 405);
  REQUIRE(res.headers.size() == 1);
  CHECK(res.headers[0].first == "Allow");
  CHECK(res.headers[0].second == "GET, HEAD, DELETE");
  CHECK(res.body.find("method_not_allowed") != std::string::npos);
}

TEST_CASE("HEAD is served by GET routes", "[router]") {
  auto rt = sample_router();
  CHECK(dispatch(rt, make(method::head, "/redis-platform/instances/x")).status == 200);
}

TEST_CASE("malformed escapes in a path parameter give 400", "[router]") {
  auto rt = sample_router();
  CHECK(dispatch(rt, make(method::get, "/redis-platform/instances/%zz")).status == 400);
}

TEST_CASE("JSON bodies: valid, malformed, not an object, too deep, wrong type", "[router][json]") {
  auto rt = sample_router();
  CHECK(dispatch(rt, make(method::post, "/echo", R"({"a":[1,2]})")).body == R"({"a":[1,2]})");
  auto bad = dispatch(rt, make(method::post, "/echo", R"({"a":)"));
  CHECK(bad.status == 400);
  CHECK(bad.body.find("bad_json") != std::string::npos);
  CHECK(bad.body.find("offset") != std::string::npos);
  CHECK(dispatch(rt, make(method::post, "/echo", "[1]")).status == 400);
  CHECK(dispatch(rt, make(method::post, "/echo", "{} x")).status == 400);
  CHECK(dispatch(rt, make(method::post, "/echo", "")).status == 400);
  CHECK(dispatch(rt, make(method::post, "/echo", std::string(100, '[') + std::string(100, ']'))).status == 400);
  auto typed = make(method::post, "/echo", "{}");
  typed.headers.emplace_back("content-type", "text/plain");
  CHECK(dispatch(rt, typed).status == 415);
}

TEST_CASE("a throwing handler becomes a 500 without leaking the message", "[router]") {
  auto rt = sample_router();
  auto res = dispatch(rt, make(method::get, "/boom"));
  CHECK(res.status == 500);
  CHECK(res.body.find("boom") == std::string::npos);
}

TEST_CASE("query parameters are decoded", "[router]") {
  auto r = make(method::get, "/x?wait=true&name=a+b%21&flag");
  CHECK(r.query_param("wait") == "true");
  CHECK(r.query_param("name") == "a b!");
  CHECK(r.query_param("flag") == "");
  CHECK_FALSE(r.query_param("missing"));
}
