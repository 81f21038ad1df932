// Security of the Redis platform's REST API over real HTTP, against a real Redis: the
// auth matrix over every route and credential, hostile input, tenant isolation, the
// purge on delete, and request smuggling / oversize headers at the HTTP layer.

#include "api_client.hpp"
#include "gateway_fixture.hpp"
#include "raw_http.hpp"

#include "stargazer/core/strings.hpp"
#include "stargazer/platform/redis/redis_platform.hpp"

#include <catch2/catch.hpp>
#include <rapidjson/document.h>

#include <array>
#include <chrono>
#include <string>
#include <vector>

using namespace stargazer;
using namespace stargazer::test;

namespace {

// An SSE request: a 200 streams until the client leaves, so read briefly and look only at
// the status line.
raw_response call_events(std::uint16_t port, const std::string& target, const std::string& headers) {
  return raw_http(port, "GET " + target + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + headers + "\r\n", 300);
}

void register_user(gateway_fixture& g, const created_instance& inst, const std::string& user_id, const std::string& name) {
  auto r = call(g.port(), "POST", "/redis-platform/instances/" + inst.id + "/users", bearer(inst.key),
                R"({"user_id":")" + user_id + R"(","display_name":")" + name + R"("})");
  INFO(r.raw);
  REQUIRE(r.status == 201);
}

// The whole dataset in one string: every key, its type and content (stream: entry ids).
// Two equal snapshots mean a request wrote nothing at all.
std::string snapshot(const gateway_fixture& g) {
  static const std::string script = R"(
local keys = redis.call('KEYS', '*')
table.sort(keys)
local out = {}
for _, k in ipairs(keys) do
  local t = redis.call('TYPE', k).ok
  local v = {}
  if t == 'hash' then v = redis.call('HGETALL', k)
  elseif t == 'set' then v = redis.call('SMEMBERS', k); table.sort(v)
  elseif t == 'zset' then v = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
  elseif t == 'string' then v = {redis.call('GET', k)}
  elseif t == 'list' then v = redis.call('LRANGE', k, 0, -1)
  elseif t == 'stream' then for _, e in ipairs(redis.call('XRANGE', k, '-', '+')) do v[#v + 1] = e[1] end
  end
  out[#out + 1] = k .. ' ' .. t .. ': ' .. table.concat(v, ',')
end
return table.concat(out, '\n'))";
  return g.redis.cli({"EVAL", script, "0"});
}

// A JSON error body {"error":{"code","message"}} with this status and code, whose message
// mentions `mentions`.
void check_error(const raw_response& r, int status, const std::string& code, const std::string& mentions = "") {
  INFO(r.raw);
  CHECK(r.status == status);
  rapidjson::Document d;
  d.Parse(r.body.c_str(), r.body.size());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("error") || !d["error"].IsObject() ||
      !d["error"].HasMember("code") || !d["error"]["code"].IsString() || !d["error"].HasMember("message") ||
      !d["error"]["message"].IsString()) {
    FAIL_CHECK("not a JSON error body");
    return;
  }
  CHECK(std::string(d["error"]["code"].GetString()) == code);
  const std::string message = d["error"]["message"].GetString();
  CHECK_THAT(message, Catch::Contains(mentions));
}

// The gateway still answers a normal request.
void check_serving(gateway_fixture& g, const created_instance& inst) {
  auto r = call(g.port(), "GET", "/redis-platform/instances/" + inst.id, bearer(inst.key));
  INFO("the gateway no longer serves: " << r.raw);
  CHECK(r.status == 200);
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (auto pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) s.replace(pos, from.size(), to);
}

std::size_t count_of(const std::string& haystack, const std::string& needle) {
  std::size_t n = 0;
  for (auto pos = haystack.find(needle); pos != std::string::npos; pos = haystack.find(needle, pos + 1)) ++n;
  return n;
}

// ---- the auth matrix ------------------------------------------------------------------

enum credential : std::size_t { no_key, wrong_key, other_key, own_key, admin_key, deleted_key, credential_count };
const std::array<const char*, credential_count> credential_names{
    "no key", "wrong key", "another instance's key", "the instance's own key", "admin key", "a deleted instance's key"};

struct route_case {
  const char* method;
  // {id}: the instance under test (for a deleted instance's key: that deleted instance's
  // own former id, so the row shows its key no longer opens it); {file}: a stored file.
  const char* path;
  const char* body;
  std::array<int, credential_count> expect;
};

// Every route of the API. The instance under test is fresh for each cell, with user u1
// registered; expected statuses per credential, in the order of `credential`.
// clang-format off
const std::vector<route_case> auth_matrix{
  //                                                                                            none wrong other own  admin deleted
  {"POST",   "/redis-platform/instances",                    R"({"display_name":"New"})",       {401, 403, 403, 403, 201, 403}},
  {"GET",    "/redis-platform/instances",                    "",                                {401, 403, 403, 403, 200, 403}},
  {"GET",    "/redis-platform/instances/{id}",               "",                                {401, 403, 403, 200, 200, 403}},
  {"PATCH",  "/redis-platform/instances/{id}",               R"({"display_name":"Patched"})",   {401, 403, 403, 200, 200, 403}},
  {"DELETE", "/redis-platform/instances/{id}",               "",                                {401, 403, 403, 200, 200, 403}},
  {"POST",   "/redis-platform/instances/{id}/users",         R"({"user_id":"u2","display_name":"Bob"})",
                                                                                                {401, 403, 403, 201, 201, 403}},
  {"GET",    "/redis-platform/instances/{id}/users",         "",                                {401, 403, 403, 200, 200, 403}},
  {"GET",    "/redis-platform/instances/{id}/users/u1",      "",                                {401, 403, 403, 200, 200, 403}},
  {"DELETE", "/redis-platform/instances/{id}/users/u1",      "",                                {401, 403, 403, 200, 200, 403}},
  {"POST",   "/redis-platform/instances/{id}/messages",      R"({"text":"hello","user_id":"u1"})",
                                                                                                {401, 403, 403, 202, 202, 403}},
  {"GET",    "/redis-platform/instances/{id}/messages",      "",                                {401, 403, 403, 200, 200, 403}},
  {"GET",    "/redis-platform/instances/{id}/events",        "",                                {401, 403, 403, 200, 200, 403}},
  // Files need no key: the 32-hex id in the URL is the capability. Any key is ignored.
  {"GET",    "/redis-platform/files/{file}/report.txt",      "",                                {200, 200, 200, 200, 200, 200}},
};
// clang-format on

}  // namespace

TEST_CASE("auth matrix: every route x every credential, refusals change nothing", "[api][security]") {
  gateway_fixture g(false);  // no worker: nothing writes to Redis behind the test's back
  const auto other = create_instance(g);
  const auto gone = create_instance(g);
  register_user(g, gone, "u1", "Ada");
  REQUIRE(call(g.port(), "DELETE", "/redis-platform/instances/" + gone.id, admin).status == 200);

  // A file as send_file stores it (protocol §5.4), owned by another instance.
  const std::string file_id = "0123456789abcdef0123456789abcdef";
  g.redis.cli({"HSET", "redis_platform:file:" + file_id, "data", "quarterly numbers", "filename", "report.txt", "mimetype",
               "text/plain", "size", "17", "timestamp", "2025-01-31T12:00:00.000Z", "channel_id", other.id});
  g.redis.cli({"EXPIRE", "redis_platform:file:" + file_id, "86400"});

  for (const auto& row : auth_matrix) {
    for (std::size_t c = 0; c < credential_count; ++c) {
      const auto target = create_instance(g, R"({"display_name":"Target","metadata":{"team":"blue"}})");
      register_user(g, target, "u1", "Ada");

      std::string path = row.path;
      replace_all(path, "{id}", c == deleted_key ? gone.id : target.id);
      replace_all(path, "{file}", file_id);
      std::string headers;
      switch (c) {
        case no_key: break;
        case wrong_key: headers = bearer("sk_live_0123456789abcdefghijklmnopqrstuv"); break;
        case other_key: headers = bearer(other.key); break;
        case own_key: headers = bearer(target.key); break;
        case admin_key: headers = admin; break;
        case deleted_key: headers = bearer(gone.key); break;
        default: break;
      }
      const int expected = row.expect[c];

      const auto before = snapshot(g);
      const bool events = path.ends_with("/events");
      const auto r = events ? call_events(g.port(), path, headers) : call(g.port(), row.method, path, headers, row.body);
      INFO(row.method << " " << path << " with " << credential_names[c] << ": expected " << expected << ", got "
                      << r.status << "\n" << r.raw);
      CHECK(r.status == expected);
      if (expected == 401) check_error(r, 401, "unauthorized");
      if (expected == 403) check_error(r, 403, "forbidden");
      if (expected >= 400) {
        // Refused: nothing written anywhere, nothing of the instance disclosed.
        CHECK(snapshot(g) == before);
        CHECK(r.body.find("Ada") == std::string::npos);
        CHECK(r.body.find("blue") == std::string::npos);
      }
      if (std::string_view(row.path).starts_with("/redis-platform/files/") && r.status == 200) {
        CHECK(r.body == "quarterly numbers");
        CHECK(r.headers.find("X-Content-Type-Options: nosniff") != std::string::npos);
      }
      call(g.port(), "DELETE", "/redis-platform/instances/" + target.id, admin);
    }
  }

  // The deleted instance's key stays dead even when its id is reused.
  const auto reborn = create_instance(g, R"({"instance_id":"reborn"})");
  REQUIRE(call(g.port(), "DELETE", "/redis-platform/instances/reborn", admin).status == 200);
  const auto again = create_instance(g, R"({"instance_id":"reborn"})");
  CHECK(call(g.port(), "GET", "/redis-platform/instances/reborn", bearer(reborn.key)).status == 403);
  CHECK(call(g.port(), "GET", "/redis-platform/instances/reborn", bearer(again.key)).status == 200);
  // Only the admin learns that an id does not exist; anyone else gets the same 403.
  CHECK(call(g.port(), "GET", "/redis-platform/instances/never-was", admin).status == 404);
  CHECK(call(g.port(), "GET", "/redis-platform/instances/never-was", bearer(other.key)).status == 403);
  // An unknown or mistyped file id is 404 whatever the key.
  CHECK(http_get(g.port(), "/redis-platform/files/" + file_id + "/other.txt").status == 404);
  CHECK(http_get(g.port(), "/redis-platform/files/0123456789ABCDEF0123456789ABCDEF/report.txt").status == 404);
  CHECK(http_get(g.port(), "/redis-platform/files/..%2F..%2Fmeta/report.txt").status == 404);
}

TEST_CASE("hostile input gets the right 4xx with a JSON error naming the problem", "[api][security]") {
  gateway_fixture g(false);
  const auto inst = create_instance(g, R"({"metadata":{"team":"blue"}})");
  register_user(g, inst, "u1", "Ada");
  const auto base = "/redis-platform/instances/" + inst.id;
  const auto key = bearer(inst.key);
  const std::string ok_message = R"({"text":"hi","user_id":"u1"})";
  const auto attachment = [](const std::string& data, const std::string& filename) {
    return R"({"data":")" + data + R"(","mimetype":"text/plain","filename":")" + filename + R"("})";
  };
  const auto with_attachments = [&](const std::vector<std::string>& list) {
    std::string out = R"({"text":"files","user_id":"u1","attachments":[)";
    for (std::size_t i = 0; i < list.size(); ++i) out += (i ? "," : "") + list[i];
    return out + "]}";
  };
  const std::string nested = R"({"metadata":)" + std::string(10000, '[') + std::string(10000, ']') + "}";

  struct hostile {
    const char* what;
    std::string method, target, headers, body;
    int status;
    const char* code;
    const char* mentions;
  };
  // clang-format off
  const std::vector<hostile> cases{
    {"malformed JSON", "POST", base + "/users", key, R"({"user_id":"u9",)", 400, "bad_json", "invalid JSON"},
    {"truncated JSON", "POST", base + "/messages", key, R"({"text":"hi)", 400, "bad_json", "invalid JSON"},
    {"trailing garbage", "POST", base + "/messages", key, ok_message + "{}", 400, "bad_json", "invalid JSON"},
    {"empty body", "POST", base + "/messages", key, "", 400, "bad_json", "empty"},
    {"JSON array instead of object", "POST", base + "/users", key, R"([{"user_id":"u9","display_name":"X"}])", 400, "bad_json", "JSON object"},
    {"JSON string instead of object", "PATCH", base, key, R"("hello")", 400, "bad_json", "JSON object"},
    {"text as a number", "POST", base + "/messages", key, R"({"text":42,"user_id":"u1"})", 400, "bad_field_type", "'text'"},
    {"user_id as a number", "POST", base + "/messages", key, R"({"text":"hi","user_id":7})", 400, "bad_field_type", "'user_id'"},
    {"display_name as an object", "PATCH", base, key, R"({"display_name":{"x":"y"}})", 400, "bad_field_type", "'display_name'"},
    {"attachments not an array", "POST", base + "/messages", key, R"({"text":"hi","user_id":"u1","attachments":{"data":"aGk="}})", 400, "bad_field_type", "'attachments'"},
    {"attachment not an object", "POST", base + "/messages", key, R"({"text":"hi","user_id":"u1","attachments":["aGk="]})", 400, "bad_field_type", "attachment"},
    {"metadata with a number value", "POST", base + "/users", key, R"({"user_id":"u9","display_name":"X","metadata":{"age":42}})", 400, "bad_field_type", "metadata"},
    {"metadata with an object value", "PATCH", base, key, R"({"metadata":{"nested":{"a":"b"}}})", 400, "bad_field_type", "metadata"},
    {"metadata with a bool value", "POST", "/redis-platform/instances", admin, R"({"metadata":{"flag":true}})", 400, "bad_field_type", "metadata"},
    {"metadata not an object", "PATCH", base, key, R"({"metadata":["a","b"]})", 400, "bad_field_type", "'metadata'"},
    {"missing user_id on inject", "POST", base + "/messages", key, R"({"text":"hi"})", 400, "missing_field", "'user_id'"},
    {"missing user_id on register", "POST", base + "/users", key, R"({"display_name":"X"})", 400, "missing_field", "'user_id'"},
    {"null user_id", "POST", base + "/messages", key, R"({"text":"hi","user_id":null})", 400, "missing_field", "'user_id'"},
    {"empty message", "POST", base + "/messages", key, R"({"user_id":"u1"})", 400, "empty_message", "'text'"},
    // Bad instance ids, in the path (percent-decoded by the router) and in a create body.
    {"instance id with '/' in the path", "GET", "/redis-platform/instances/a%2Fb", admin, "", 400, "bad_instance_id", "instance ids"},
    {"instance id '..' in the path", "GET", "/redis-platform/instances/..", admin, "", 400, "bad_instance_id", "instance ids"},
    {"instance id '..' percent-encoded", "GET", "/redis-platform/instances/%2E%2E/users", admin, "", 400, "bad_instance_id", "instance ids"},
    {"instance id with a space in the path", "GET", "/redis-platform/instances/a%20b", admin, "", 400, "bad_instance_id", "instance ids"},
    {"instance id of 65 chars in the path", "GET", "/redis-platform/instances/" + std::string(65, 'a'), admin, "", 400, "bad_instance_id", "instance ids"},
    {"instance id with a NUL in the path", "DELETE", "/redis-platform/instances/a%00b", admin, "", 400, "bad_instance_id", "instance ids"},
    {"instance id with '/' on create", "POST", "/redis-platform/instances", admin, R"({"instance_id":"a/b"})", 400, "bad_instance_id", "instance ids"},
    {"instance id '..' on create", "POST", "/redis-platform/instances", admin, R"({"instance_id":".."})", 400, "bad_instance_id", "instance ids"},
    {"instance id with a space on create", "POST", "/redis-platform/instances", admin, R"({"instance_id":"a b"})", 400, "bad_instance_id", "instance ids"},
    // Over-long ids in a body are 413 field_too_long, as docs/openapi.json specifies (in a path: 400 above).
    {"instance id of 65 chars on create", "POST", "/redis-platform/instances", admin, R"({"instance_id":")" + std::string(65, 'a') + "\"}", 413, "field_too_long", "'instance_id'"},
    {"instance id with a glob on create", "POST", "/redis-platform/instances", admin, R"({"instance_id":"*"})", 400, "bad_instance_id", "instance ids"},
    {"user id with a space on register", "POST", base + "/users", key, R"({"user_id":"bad id","display_name":"X"})", 400, "bad_user_id", "user ids"},
    {"user id with '/' on register", "POST", base + "/users", key, R"({"user_id":"a/b","display_name":"X"})", 400, "bad_user_id", "user ids"},
    {"user id '..' on register", "POST", base + "/users", key, R"({"user_id":"..","display_name":"X"})", 400, "bad_user_id", "user ids"},
    {"user id of 129 chars on register", "POST", base + "/users", key, R"({"user_id":")" + std::string(129, 'u') + R"(","display_name":"X"})", 413, "field_too_long", "'user_id'"},
    {"user id with markup on inject", "POST", base + "/messages", key, R"({"text":"hi","user_id":"<script>"})", 400, "bad_user_id", "user ids"},
    {"user id with CRLF on inject", "POST", base + "/messages", key, R"({"text":"hi","user_id":"u1\r\nX: y"})", 400, "bad_user_id", "user ids"},
    {"user id of 129 chars in the path", "GET", base + "/users/" + std::string(129, 'u'), key, "", 400, "bad_user_id", "user ids"},
    {"user id with a space in the path", "GET", base + "/users/bad%20id", key, "", 400, "bad_user_id", "user ids"},
    {"user id '..' in the path", "DELETE", base + "/users/..", key, "", 400, "bad_user_id", "user ids"},
    // Limits.
    {"text over 32 KiB", "POST", base + "/messages", key, R"({"text":")" + std::string(32 * 1024 + 1, 'x') + R"(","user_id":"u1"})", 413, "field_too_long", "'text'"},
    {"11 attachments", "POST", base + "/messages", key, with_attachments(std::vector<std::string>(11, attachment("aGk=", "a.txt"))), 413, "too_many_attachments", "10"},
    {"attachment with invalid base64", "POST", base + "/messages", key, with_attachments({attachment("!!not*base64!!", "a.txt")}), 400, "bad_attachment", "base64"},
    {"attachment filename with '/'", "POST", base + "/messages", key, with_attachments({attachment("aGk=", "../../etc/passwd")}), 400, "bad_filename", "path separators"},
    {"attachment filename with '\\'", "POST", base + "/messages", key, with_attachments({attachment("aGk=", R"(..\\boot.ini)")}), 400, "bad_filename", "path separators"},
    {"attachment without data", "POST", base + "/messages", key, R"({"text":"hi","user_id":"u1","attachments":[{"filename":"a.txt"}]})", 400, "missing_field", "'data'"},
    {"deeply nested JSON", "POST", "/redis-platform/instances", admin, nested, 400, "bad_json", "nested deeper"},
    {"reserved metadata key api_key_sha256 on create", "POST", "/redis-platform/instances", admin, R"({"metadata":{"api_key_sha256":"00"}})", 400, "reserved_metadata_key", "api_key_sha256"},
    {"reserved metadata key created_at on create", "POST", "/redis-platform/instances", admin, R"({"metadata":{"created_at":"1970-01-01"}})", 400, "reserved_metadata_key", "created_at"},
    {"reserved metadata key api_key_sha256 on patch", "PATCH", base, key, R"({"metadata":{"api_key_sha256":")" + platform::sha256_hex("attacker") + R"("}})", 400, "reserved_metadata_key", "api_key_sha256"},
    {"reserved metadata key created_at on patch", "PATCH", base, key, R"({"metadata":{"created_at":"1970-01-01"}})", 400, "reserved_metadata_key", "created_at"},
    {"reserved metadata key api_key on patch", "PATCH", base, key, R"({"metadata":{"api_key":"x"}})", 400, "reserved_metadata_key", "api_key"},
    {"reserved metadata key instance_id on patch", "PATCH", base, key, R"({"metadata":{"instance_id":"other"}})", 400, "reserved_metadata_key", "instance_id"},
    {"metadata key with bad characters", "PATCH", base, key, R"({"metadata":{"a b":"x"}})", 400, "bad_metadata_key", "metadata keys"},
    // Query values.
    {"timeout not a number", "POST", base + "/messages?wait=true&timeout=abc", key, ok_message, 400, "bad_timeout", "'timeout'"},
    {"timeout negative", "POST", base + "/messages?wait=true&timeout=-1", key, ok_message, 400, "bad_timeout", "'timeout'"},
    {"timeout above the maximum", "POST", base + "/messages?wait=true&timeout=121", key, ok_message, 400, "bad_timeout", "'timeout'"},
    {"timeout NaN", "POST", base + "/messages?wait=true&timeout=nan", key, ok_message, 400, "bad_timeout", "'timeout'"},
    {"timeout infinite", "POST", base + "/messages?wait=true&timeout=inf", key, ok_message, 400, "bad_timeout", "'timeout'"},
    {"timeout with junk", "POST", base + "/messages?wait=true&timeout=5s", key, ok_message, 400, "bad_timeout", "'timeout'"},
    {"limit zero", "GET", base + "/messages?limit=0", key, "", 400, "bad_limit", "'limit'"},
    {"limit above 200", "GET", base + "/messages?limit=201", key, "", 400, "bad_limit", "'limit'"},
    {"limit negative", "GET", base + "/messages?limit=-1", key, "", 400, "bad_limit", "'limit'"},
    {"limit not a number", "GET", base + "/messages?limit=ten", key, "", 400, "bad_limit", "'limit'"},
    {"limit overflowing", "GET", base + "/messages?limit=99999999999999999999999", key, "", 400, "bad_limit", "'limit'"},
    {"before not a number", "GET", base + "/messages?before=yesterday", key, "", 400, "bad_before", "'before'"},
    {"before NaN", "GET", base + "/messages?before=nan", key, "", 400, "bad_before", "'before'"},
    {"before with junk", "GET", base + "/messages?before=1700000000x", key, "", 400, "bad_before", "'before'"},
    // Media type and credentials.
    {"text/plain on inject", "POST", base + "/messages", key + "Content-Type: text/plain\r\n", ok_message, 415, "unsupported_media_type", "application/json"},
    {"text/plain on register", "POST", base + "/users", key + "Content-Type: text/plain\r\n", R"({"user_id":"u9","display_name":"X"})", 415, "unsupported_media_type", "application/json"},
    {"text/plain on create", "POST", "/redis-platform/instances", admin + "Content-Type: text/plain\r\n", "{}", 415, "unsupported_media_type", "application/json"},
    {"form encoding on patch", "PATCH", base, key + "Content-Type: application/x-www-form-urlencoded\r\n", "display_name=x", 415, "unsupported_media_type", "application/json"},
    {"10 KiB key on an instance route", "GET", base, bearer(std::string(10 * 1024, 'k')), "", 401, "unauthorized", "invalid API key"},
    {"10 KiB key on an admin route", "POST", "/redis-platform/instances", bearer(std::string(10 * 1024, 'k')), "{}", 401, "unauthorized", "invalid API key"},
    {"Basic instead of Bearer", "GET", base, "Authorization: Basic dGVzdDp0ZXN0\r\n", "", 401, "unauthorized", "Bearer"},
    {"empty Bearer", "GET", base, "Authorization: Bearer   \r\n", "", 401, "unauthorized", "Bearer"},
    {"admin key with a suffix", "GET", "/redis-platform/instances", bearer(std::string(gateway_fixture::admin_key) + "x"), "", 403, "forbidden", "admin key"},
    {"own key with a suffix", "GET", base, bearer(inst.key + "x"), "", 403, "forbidden", inst.id.c_str()},
  };
  // clang-format on
  // http_request adds Content-Type: application/json; a second Content-Type makes the
  // request ambiguous, so the media-type cases are sent raw.
  const auto send = [&](const hostile& h) {
    if (h.headers.find("Content-Type:") == std::string::npos) return call(g.port(), h.method, h.target, h.headers, h.body);
    return raw_http(g.port(), h.method + " " + h.target + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" +
                                  h.headers + "Content-Length: " + std::to_string(h.body.size()) + "\r\n\r\n" + h.body);
  };

  for (const auto& h : cases) {
    const auto before = snapshot(g);
    const auto r = send(h);
    INFO(h.what << ": " << h.method << " " << h.target.substr(0, 120) << " expected " << h.status << " " << h.code
                << ", got " << r.status << " " << r.body.substr(0, 300));
    check_error(r, h.status, h.code, h.mentions);
    CHECK(snapshot(g) == before);
    check_serving(g, inst);
  }
  // The refused writes left the key, the stamp and the roster alone.
  CHECK(g.redis.cli({"HGET", "redis_platform:meta:" + inst.id, "api_key_sha256"}) == platform::sha256_hex(inst.key));
  CHECK(call(g.port(), "GET", base, bearer("attacker")).status == 403);
  CHECK(g.redis.cli({"HKEYS", "redis_platform:users:" + inst.id}) == "u1");

  // Bounds are inclusive: exactly 32 KiB of text and 10 attachments are accepted.
  CHECK(call(g.port(), "POST", base + "/messages", key,
             R"({"text":")" + std::string(32 * 1024, 'x') + R"(","user_id":"u1"})").status == 202);
  CHECK(call(g.port(), "POST", base + "/messages", key,
             with_attachments(std::vector<std::string>(10, attachment("aGk=", "a.txt")))).status == 202);

  SECTION("bad Last-Event-ID on the event stream") {
    for (const std::string id : {"abc", "1-2-3", "-1", "1700000000000-", "1700000000000-0 x", "18446744073709551616-0",
                                 "1-99999999999999999999"}) {
      auto r = call_events(g.port(), base + "/events", key + "Last-Event-ID: " + id + "\r\n");
      INFO("Last-Event-ID: " << id);
      check_error(r, 400, "bad_last_event_id", "Last-Event-ID");
    }
    auto q = call_events(g.port(), base + "/events?last_event_id=abc", key);
    check_error(q, 400, "bad_last_event_id", "Last-Event-ID");
    CHECK(call_events(g.port(), base + "/events", key + "Last-Event-ID: 18446744073709551615-0\r\n").status == 200);
    check_serving(g, inst);
  }

  SECTION("a body over the server's limit is refused with 413 before it is read") {
    // Declared only: the server must answer from the headers, without reading 16 MiB.
    auto r = raw_http(g.port(), "POST " + base + "/messages HTTP/1.1\r\nHost: localhost\r\n" + key +
                                    "Content-Type: application/json\r\nContent-Length: " +
                                    std::to_string(16 * 1024 * 1024 + 1) + "\r\n\r\n",
                      3000);
    check_error(r, 413, "body_too_large", "exceeds");
    check_serving(g, inst);
  }

  SECTION("a body over the server's limit, actually sent, is refused with 413") {
    const std::string text(16 * 1024 * 1024, 'x');
    const auto body = R"({"text":")" + text + R"(","user_id":"u1"})";
    auto r = call(g.port(), "POST", base + "/messages", key, body);
    check_error(r, 413, "body_too_large", "exceeds");
    check_serving(g, inst);
  }
}

TEST_CASE("an instance's key cannot read or change another instance's users, messages or history",
          "[api][security]") {
  gateway_fixture g(false);
  const auto a = create_instance(g);
  const auto b = create_instance(g, R"({"display_name":"Bravo"})");
  register_user(g, b, "u1", "Bella");
  REQUIRE(call(g.port(), "POST", "/redis-platform/instances/" + b.id + "/messages", bearer(b.key),
               R"({"text":"secret plans","user_id":"u1"})").status == 202);
  const auto bbase = "/redis-platform/instances/" + b.id;
  const auto akey = bearer(a.key);

  struct attempt {
    std::string method, target, body;
  };
  const std::vector<attempt> attempts{
      {"GET", bbase, ""},
      {"PATCH", bbase, R"({"display_name":"Owned","metadata":{"team":"red"}})"},
      {"DELETE", bbase, ""},
      {"GET", bbase + "/users", ""},
      {"GET", bbase + "/users/u1", ""},
      {"POST", bbase + "/users", R"({"user_id":"mallory","display_name":"Mallory"})"},
      {"DELETE", bbase + "/users/u1", ""},
      {"POST", bbase + "/messages", R"({"text":"injected","user_id":"u1"})"},
      {"POST", bbase + "/messages?wait=true&timeout=1", R"({"text":"injected","user_id":"u1"})"},
      {"GET", bbase + "/messages", ""},
      {"GET", bbase + "/messages?limit=200&before=9999999999", ""},
  };
  for (const auto& at : attempts) {
    const auto before = snapshot(g);
    auto r = call(g.port(), at.method, at.target, akey, at.body);
    INFO(at.method << " " << at.target << " with A's key");
    check_error(r, 403, "forbidden", b.id);
    CHECK(r.body.find("Bella") == std::string::npos);
    CHECK(r.body.find("secret plans") == std::string::npos);
    CHECK(r.body.find("Bravo") == std::string::npos);
    CHECK(snapshot(g) == before);
  }
  auto sse = call_events(g.port(), bbase + "/events", akey + "Last-Event-ID: 0-0\r\n");
  check_error(sse, 403, "forbidden", b.id);

  // A's own routes see only A: B's user and messages are not there.
  const auto abase = "/redis-platform/instances/" + a.id;
  CHECK(call(g.port(), "GET", abase + "/users/u1", akey).status == 404);
  CHECK(json_of(call(g.port(), "GET", abase + "/users", akey))["users"].Size() == 0);
  CHECK(json_of(call(g.port(), "GET", abase + "/messages", akey))["messages"].Size() == 0);
  // B is intact.
  CHECK(call(g.port(), "GET", bbase + "/users/u1", bearer(b.key)).status == 200);
  CHECK(json_of(call(g.port(), "GET", bbase + "/messages", bearer(b.key)))["messages"].Size() == 1);

  // Idempotency keys are per instance: A reusing B's key gets its own fresh result.
  const auto idem = "Idempotency-Key: order-7\r\n";
  auto first = call(g.port(), "POST", bbase + "/messages", bearer(b.key) + idem, R"({"text":"b's order","user_id":"u1"})");
  REQUIRE(first.status == 202);
  auto replay = call(g.port(), "POST", abase + "/messages", akey + idem, R"({"text":"a's order","user_id":"u1","user_name":"Al"})");
  CHECK(replay.status == 202);
  CHECK(replay.headers.find("Idempotent-Replayed") == std::string::npos);
  CHECK(std::string(json_of(replay)["message_id"].GetString()) != json_of(first)["message_id"].GetString());
}

TEST_CASE("deleting an instance purges every key of it", "[api][security]") {
  gateway_fixture g;  // with the echo worker: replies fill the history and the event stream
  const auto inst = create_instance(g, R"({"metadata":{"team":"blue"}})");
  const auto keep = create_instance(g);
  register_user(g, inst, "u1", "Ada");
  register_user(g, keep, "u1", "Kim");
  const auto base = "/redis-platform/instances/" + inst.id;
  for (const auto& i : {inst, keep}) {
    auto r = call(g.port(), "POST", "/redis-platform/instances/" + i.id + "/messages?wait=true&timeout=10",
                  bearer(i.key), R"({"text":"hello","user_id":"u1"})");
    INFO(r.raw);
    REQUIRE(r.status == 200);
  }
  const std::vector<std::string> seed_keys{"redis_platform:meta:" + inst.id, "redis_platform:users:" + inst.id,
                                           "channel_msgs:redis:" + inst.id, platform::events_stream(inst.id)};
  for (const auto& k : seed_keys) {
    INFO(k);
    CHECK(g.redis.cli({"EXISTS", k}) == "1");
  }

  REQUIRE(call(g.port(), "DELETE", base, bearer(inst.key)).status == 200);

  for (const auto& k : seed_keys) {
    INFO(k << " survived the delete");
    CHECK(g.redis.cli({"EXISTS", k}) == "0");
  }
  CHECK(g.redis.cli({"SISMEMBER", "redis_platform:instances", inst.id}) == "0");
  // Whatever else names the instance is per-message state that expires by its TTL (§5.7:
  // message hashes; §4.5: delivery claims), never registry, history or event keys.
  const auto left = g.redis.cli({"KEYS", "*" + inst.id + "*"});
  std::size_t start = 0;
  while (start < left.size()) {
    const auto end = left.find('\n', start);
    const auto k = left.substr(start, end == std::string::npos ? std::string::npos : end - start);
    start = end == std::string::npos ? left.size() : end + 1;
    if (k.empty()) continue;
    INFO("left after delete: " << k);
    CHECK((k.starts_with("sg:msg:redis:" + inst.id + ":") || k.starts_with("sg:outbound:claim:sg:msg:redis:" + inst.id + ":")));
    CHECK(std::stol(g.redis.cli({"TTL", k})) > 0);
  }
  // The other instance is untouched.
  for (const auto& k : {"redis_platform:meta:" + keep.id, "redis_platform:users:" + keep.id,
                        "channel_msgs:redis:" + keep.id, platform::events_stream(keep.id)}) {
    INFO(k);
    CHECK(g.redis.cli({"EXISTS", k}) == "1");
  }
  // The key is dead; the admin sees the instance gone.
  CHECK(call(g.port(), "GET", base, bearer(inst.key)).status == 403);
  CHECK(call(g.port(), "GET", base, admin).status == 404);
  CHECK(call(g.port(), "DELETE", base, admin).status == 404);
}

TEST_CASE("HTTP layer: request smuggling and oversize headers", "[api][security]") {
  gateway_fixture g(false);
  const auto inst = create_instance(g);
  const auto count_instances = [&] { return g.redis.cli({"SCARD", "redis_platform:instances"}); };
  // If the server framed by the wrong header, the "body" would end early and the
  // smuggled POST would run as a second request.
  const std::string smuggled = "POST /redis-platform/instances HTTP/1.1\r\nHost: localhost\r\n" + admin +
                               "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
  const std::string chunked_body = "0\r\n\r\n" + smuggled;
  const std::string head = "POST /redis-platform/instances HTTP/1.1\r\nHost: localhost\r\n" + admin +
                           "Content-Type: application/json\r\n";
  const std::vector<std::pair<const char*, std::string>> requests{
      {"Content-Length then Transfer-Encoding",
       head + "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}" + smuggled},
      {"Transfer-Encoding then Content-Length", head + "Transfer-Encoding: chunked\r\nContent-Length: " +
                                                    std::to_string(chunked_body.size()) + "\r\n\r\n" + chunked_body},
      {"two different Content-Lengths", head + "Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}" + smuggled},
  };
  for (const auto& [what, bytes] : requests) {
    const auto before = count_instances();
    const auto started = std::chrono::steady_clock::now();
    auto r = raw_http(g.port(), bytes, 3000);
    const auto took = std::chrono::steady_clock::now() - started;
    INFO(what << "\n" << r.raw);
    check_error(r, 400, "bad_request");
    CHECK(count_of(r.raw, "HTTP/1.1 ") == 1);                     // one answer, nothing for the smuggled request
    CHECK(r.headers.find("Connection: close") != std::string::npos);
    CHECK(took < std::chrono::milliseconds(2000));                 // the server closed the connection itself
    CHECK(count_instances() == before);
    check_serving(g, inst);
  }

  SECTION("headers over 16 KiB get 431") {
    const std::vector<std::pair<const char*, std::string>> big{
        {"one 17 KiB header", "X-Padding: " + std::string(17 * 1024, 'p') + "\r\n"},
        {"200 headers of 100 bytes", [] {
           std::string h;
           for (int i = 0; i < 200; ++i) h += "X-Pad-" + std::to_string(i) + ": " + std::string(90, 'p') + "\r\n";
           return h;
         }()},
        {"a 20 KiB Authorization header", bearer(std::string(20 * 1024, 'k'))},
    };
    for (const auto& [what, headers] : big) {
      auto r = raw_http(g.port(), "GET /redis-platform/instances/" + inst.id + " HTTP/1.1\r\nHost: localhost\r\n" +
                                      bearer(inst.key) + headers + "\r\n",
                        3000);
      INFO(what << "\n" << r.raw.substr(0, 500));
      check_error(r, 431, "headers_too_large");
      check_serving(g, inst);
    }
    // A request line over the limit too.
    auto r = raw_http(g.port(), "GET /redis-platform/instances/" + std::string(17 * 1024, 'a') +
                                    " HTTP/1.1\r\nHost: localhost\r\n\r\n",
                      3000);
    check_error(r, 431, "headers_too_large");
    check_serving(g, inst);
  }
}
