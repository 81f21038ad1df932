// One person, several accounts: the identity store (platform/identity.hpp) as the worker
// calls it, the REST admin routes (/redis-platform/identities...) and `stargazer identity
// link|unlink|show` as the real binary, against a real Redis.

#include "api_client.hpp"
#include "child_process.hpp"
#include "fast_redis.hpp"
#include "gateway_fixture.hpp"
#include "redis_server.hpp"
#include "run_coro.hpp"

#include "stargazer/core/json.hpp"
#include "stargazer/platform/identity.hpp"

#include <catch2/catch.hpp>
#include <rapidjson/document.h>

#include <sstream>
#include <string>
#include <vector>

using namespace stargazer;
using namespace stargazer::test;
using namespace std::chrono_literals;

namespace {

const std::string identities = "/redis-platform/identities";

std::string link_body(const std::vector<std::string>& accounts, const std::string& more = "") {
  std::string body = R"({"accounts":[)";
  for (std::size_t i = 0; i < accounts.size(); ++i) body += (i ? "," : "") + json::quoted(accounts[i]);
  return body + "]" + more + "}";
}

std::vector<std::string> accounts_of(const rapidjson::Value& d) {
  std::vector<std::string> out;
  for (const auto& a : d["accounts"].GetArray()) out.emplace_back(a.GetString());
  return out;
}

std::string unified_id_of(const raw_response& r) { return json_of(r)["unified_id"].GetString(); }

// Every identity key with its content: equal snapshots mean nothing changed.
std::string identity_snapshot(const gateway_fixture& g) {
  static const std::string script = R"(
local keys = redis.call('KEYS', 'sg:identity:*')
table.sort(keys)
local out = {}
for _, k in ipairs(keys) do
  local v
  if redis.call('TYPE', k).ok == 'set' then v = redis.call('SMEMBERS', k); table.sort(v); v = table.concat(v, ',')
  else v = redis.call('GET', k) end
  out[#out + 1] = k .. '=' .. v
end
return table.concat(out, '\n'))";
  return g.redis.cli({"EVAL", script, "0"});
}

void check_error(const raw_response& r, int status, const std::string& code, const std::string& mentions = "") {
  INFO(r.raw);
  CHECK(r.status == status);
  const auto d = json_of(r);
  REQUIRE(d.HasMember("error"));
  CHECK(std::string(d["error"]["code"].GetString()) == code);
  CHECK(std::string(d["error"]["message"].GetString()).find(mentions) != std::string::npos);
}

// `stargazer <args> --url <the gateway>` with the admin key in the environment.
std::pair<int, std::string> sg(const gateway_fixture& g, std::vector<std::string> args,
                               std::vector<std::string> env = {std::string("SG_ADMIN_API_KEY=") +
                                                               gateway_fixture::admin_key}) {
  std::vector<std::string> argv{STARGAZER_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--url");
  argv.push_back("http://127.0.0.1:" + std::to_string(g.port()));
  return run_process(argv, std::move(env), 30s);
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The value printed after `label` at the start of a line ("unified_id  7f3a...").
std::string printed(const std::string& text, const std::string& label) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(label, 0) == 0) {
      const auto at = line.find_first_not_of(' ', label.size());
      return at == std::string::npos ? std::string() : line.substr(at);
    }
  return {};
}

}  // namespace

TEST_CASE("identity: link creates a person, links more accounts to it, and is idempotent", "[identity]") {
  gateway_fixture g(false);
  const auto created = call(g.port(), "POST", identities, admin,
                            link_body({"webchat:browser-0001", "discord:123456789012345678", "matrix:@ada:example.org"}));
  INFO(created.raw);
  REQUIRE(created.status == 201);
  const auto d = json_of(created);
  const std::string id = d["unified_id"].GetString();
  CHECK(id.size() == 16);
  CHECK(d["created"].GetBool());
  CHECK(d["merged_ids"].Size() == 0);
  const std::vector<std::string> three{"discord:123456789012345678", "matrix:@ada:example.org", "webchat:browser-0001"};
  CHECK(accounts_of(d) == three);  // sorted

  // The keys of docs/protocol.md §5.9.
  CHECK(g.redis.cli({"GET", "sg:identity:user:matrix:@ada:example.org"}) == id);
  CHECK(g.redis.cli({"SCARD", "sg:identity:unified:" + id}) == "3");

  // By id, and by account (percent-encoded or not).
  CHECK(accounts_of(json_of(call(g.port(), "GET", identities + "/" + id, admin))) == three);
  CHECK(unified_id_of(call(g.port(), "GET", identities + "/accounts/matrix:%40ada:example.org", admin)) == id);
  CHECK(unified_id_of(call(g.port(), "GET", identities + "/accounts/discord:123456789012345678", admin)) == id);

  // Again: the same person, nothing new.
  const auto again = call(g.port(), "POST", identities, admin, link_body({"discord:123456789012345678", "webchat:browser-0001"}));
  CHECK(again.status == 200);
  CHECK(unified_id_of(again) == id);
  CHECK_FALSE(json_of(again)["created"].GetBool());

  // One known account brings a new one to its person.
  const auto more = call(g.port(), "POST", identities, admin, link_body({"slack:U0ADA", "webchat:browser-0001"}));
  CHECK(more.status == 200);
  CHECK(unified_id_of(more) == id);
  CHECK(json_of(more)["accounts"].Size() == 4);

  // A chosen id.
  const auto chosen = call(g.port(), "POST", identities, admin, link_body({"webchat:bob-00001"}, R"(,"unified_id":"bob")"));
  CHECK(chosen.status == 201);
  CHECK(unified_id_of(chosen) == "bob");
}

TEST_CASE("identity: accounts of two people are refused unless merge, which moves every account", "[identity]") {
  gateway_fixture g(false);
  const auto ada = unified_id_of(call(g.port(), "POST", identities, admin, link_body({"discord:1", "matrix:@ada:x.org"})));
  const auto ada2 = unified_id_of(call(g.port(), "POST", identities, admin, link_body({"webchat:ada-0001", "slack:U1"})));
  REQUIRE(ada != ada2);

  const auto before = identity_snapshot(g);
  const auto refused = call(g.port(), "POST", identities, admin, link_body({"discord:1", "webchat:ada-0001"}));
  check_error(refused, 409, "identity_conflict", "webchat:ada-0001 belongs to " + ada2);
  CHECK(identity_snapshot(g) == before);  // nothing changed

  // A chosen id that differs from the accounts' own is a conflict too.
  check_error(call(g.port(), "POST", identities, admin, link_body({"discord:1"}, R"(,"unified_id":"someone")")), 409,
              "identity_conflict", "discord:1 belongs to " + ada);

  const auto merged = call(g.port(), "POST", identities, admin, link_body({"discord:1", "webchat:ada-0001"}, R"(,"merge":true)"));
  INFO(merged.raw);
  REQUIRE(merged.status == 200);
  const auto d = json_of(merged);
  CHECK(std::string(d["unified_id"].GetString()) == ada);  // the first listed account's person
  REQUIRE(d["merged_ids"].Size() == 1);
  CHECK(std::string(d["merged_ids"][0].GetString()) == ada2);
  CHECK(accounts_of(d) == std::vector<std::string>{"discord:1", "matrix:@ada:x.org", "slack:U1", "webchat:ada-0001"});
  CHECK(g.redis.cli({"EXISTS", "sg:identity:unified:" + ada2}) == "0");
  CHECK(g.redis.cli({"GET", "sg:identity:user:slack:U1"}) == ada);  // an account not named moved too
  check_error(call(g.port(), "GET", identities + "/" + ada2, admin), 404, "identity_not_found", ada2);

  // Merged into a chosen id.
  const auto renamed =
      call(g.port(), "POST", identities, admin, link_body({"slack:U1"}, R"(,"unified_id":"ada","merge":true)"));
  CHECK(renamed.status == 201);
  CHECK(json_of(renamed)["accounts"].Size() == 4);
  CHECK(g.redis.cli({"EXISTS", "sg:identity:unified:" + ada}) == "0");
}

TEST_CASE("identity: unlink removes one account, the person goes with its last", "[identity]") {
  gateway_fixture g(false);
  const auto id = unified_id_of(call(g.port(), "POST", identities, admin, link_body({"discord:1", "webchat:ada-0001"})));
  const auto r = call(g.port(), "DELETE", identities + "/accounts/discord:1", admin);
  REQUIRE(r.status == 200);
  CHECK(json_of(r)["unified_id"].GetString() == id);
  check_error(call(g.port(), "GET", identities + "/accounts/discord:1", admin), 404, "identity_not_found", "discord:1");
  check_error(call(g.port(), "DELETE", identities + "/accounts/discord:1", admin), 404, "identity_not_found");
  CHECK(accounts_of(json_of(call(g.port(), "GET", identities + "/" + id, admin))) ==
        std::vector<std::string>{"webchat:ada-0001"});
  REQUIRE(call(g.port(), "DELETE", identities + "/accounts/webchat:ada-0001", admin).status == 200);
  CHECK(g.redis.cli({"KEYS", "sg:identity:*"}).empty());
}

TEST_CASE("identity: bad bodies and paths are 4xx naming the problem, and change nothing", "[identity]") {
  gateway_fixture g(false);
  REQUIRE(call(g.port(), "POST", identities, admin, link_body({"discord:1"})).status == 201);
  const auto before = identity_snapshot(g);
  std::vector<std::string> seventeen;
  for (int i = 0; i < 17; ++i) seventeen.push_back("discord:" + std::to_string(100 + i));
  struct bad_case {
    std::string body;
    int status;
    const char* code;
    const char* mentions;
  };
  const std::vector<bad_case> cases{
      {"{}", 400, "missing_field", "'accounts'"},
      {R"({"accounts":"discord:1"})", 400, "bad_field_type", "'accounts'"},
      {R"({"accounts":[]})", 400, "missing_field", "'accounts'"},
      {R"({"accounts":[1]})", 400, "bad_field_type", "'accounts'"},
      {link_body({"no-colon"}), 400, "bad_account", "platform:user_id"},
      {link_body({"Discord:1"}), 400, "bad_account", "platform:user_id"},
      {link_body({"discord:a b"}), 400, "bad_account", "platform:user_id"},
      {link_body({"discord:"}), 400, "bad_account", "platform:user_id"},
      {link_body(seventeen), 413, "too_many_accounts", "16"},
      {link_body({"discord:2"}, R"(,"unified_id":"a:b")"), 400, "bad_unified_id", "unified ids"},
      {link_body({"discord:2"}, R"(,"unified_id":5)"), 400, "bad_field_type", "'unified_id'"},
      {link_body({"discord:2"}, R"(,"merge":"yes")"), 400, "bad_field_type", "'merge'"},
  };
  for (const auto& c : cases) {
    INFO(c.body);
    check_error(call(g.port(), "POST", identities, admin, c.body), c.status, c.code, c.mentions);
  }
  check_error(call(g.port(), "GET", identities + "/accounts/no-colon", admin), 400, "bad_account");
  check_error(call(g.port(), "DELETE", identities + "/accounts/discord:a%20b", admin), 400, "bad_account");
  check_error(call(g.port(), "GET", identities + "/a:b", admin), 400, "bad_unified_id");
  CHECK(identity_snapshot(g) == before);
}

TEST_CASE("identity: the routes take the admin key only", "[identity][security]") {
  gateway_fixture g(false);
  const auto inst = create_instance(g);
  const auto id = unified_id_of(call(g.port(), "POST", identities, admin, link_body({"discord:1"})));
  const auto before = identity_snapshot(g);
  struct route {
    const char* method;
    std::string path;
    std::string body;
  };
  const std::vector<route> routes{{"POST", identities, link_body({"discord:2"})},
                                  {"GET", identities + "/" + id, ""},
                                  {"GET", identities + "/accounts/discord:1", ""},
                                  {"DELETE", identities + "/accounts/discord:1", ""}};
  for (const auto& r : routes) {
    INFO(r.method << " " << r.path);
    check_error(call(g.port(), r.method, r.path, "", r.body), 401, "unauthorized");
    check_error(call(g.port(), r.method, r.path, bearer(inst.key), r.body), 403, "forbidden", "admin key");
  }
  CHECK(identity_snapshot(g) == before);
}

TEST_CASE("identity: a person holds at most 64 accounts", "[identity]") {
  gateway_fixture g(false);
  std::string id;
  for (int batch = 0; batch < 4; ++batch) {
    std::vector<std::string> accounts;
    for (int i = 0; i < 16; ++i) accounts.push_back("discord:" + std::to_string(batch * 16 + i));
    if (batch > 0) accounts.back() = "discord:0";  // joins the person made by the first batch
    const auto r = call(g.port(), "POST", identities, admin, link_body(accounts));
    REQUIRE(r.status / 100 == 2);
    id = unified_id_of(r);
  }
  const auto held = std::stoul(g.redis.cli({"SCARD", "sg:identity:unified:" + id}));
  CHECK(held == 61);  // 16 + 3 × 15
  std::vector<std::string> more{"discord:0"};
  for (int i = 0; i < 4; ++i) more.push_back("slack:U" + std::to_string(i));
  check_error(call(g.port(), "POST", identities, admin, link_body(more)), 409, "identity_full", "65");
  CHECK(g.redis.cli({"SCARD", "sg:identity:unified:" + id}) == "61");
}

TEST_CASE("identity: resolve_identity answers the worker's lookup in one call", "[identity]") {
  redis_server server;
  boost::asio::io_context io;
  redis::connection conn(io.get_executor(), fast_redis_settings(server.url()));
  conn.start();

  const auto unknown = run_coro(io, platform::resolve_identity(conn, "discord", "1"));
  REQUIRE(unknown);
  CHECK_FALSE(*unknown);

  platform::link_request link;
  link.accounts = {{"discord", "1"}, {"matrix", "@ada:example.org"}, {"webchat", "ada-0001"}};
  const auto linked = run_coro(io, platform::link_identity(conn, link));
  REQUIRE(linked);
  REQUIRE(linked->what == platform::link_outcome::status::linked);

  const auto found = run_coro(io, platform::resolve_identity(conn, "matrix", "@ada:example.org"));
  REQUIRE(found);
  REQUIRE(*found);
  CHECK((*found)->unified_id == linked->identity.unified_id);
  CHECK(platform::aliases_of(**found, "matrix", "@ada:example.org") ==
        std::vector<std::string>{"discord:1", "webchat:ada-0001"});

  const auto removed = run_coro(io, platform::unlink_identity(conn, platform::account{"discord", "1"}));
  REQUIRE(removed);
  CHECK(*removed == linked->identity.unified_id);
  const auto by_id = run_coro(io, platform::identity_by_id(conn, linked->identity.unified_id));
  REQUIRE(by_id);
  REQUIRE(*by_id);
  CHECK((*by_id)->accounts == std::vector<std::string>{"matrix:@ada:example.org", "webchat:ada-0001"});
  conn.stop();
}

TEST_CASE("identity: account names and unified ids are checked", "[identity]") {
  const auto a = platform::parse_account("matrix:@ada:example.org");
  REQUIRE(a);
  CHECK(a->platform == "matrix");
  CHECK(a->user_id == "@ada:example.org");
  CHECK(a->text() == "matrix:@ada:example.org");
  for (const char* bad : {"", ":x", "discord", "discord:", "Discord:1", "dis cord:1", "discord:a b", "discord:a\tb",
                          "abcdefghijklmnopqrstuvwxyz0123456:1"})
    CHECK_FALSE(platform::parse_account(bad));
  CHECK(platform::parse_account("abcdefghijklmnopqrstuvwxyz012345:1"));  // a 32-character platform
  CHECK(platform::parse_account("discord:" + std::string(256, '9')));
  CHECK_FALSE(platform::parse_account("discord:" + std::string(257, '9')));
  CHECK(platform::valid_unified_id("7f3a9c21d4e5b6a8"));
  CHECK(platform::valid_unified_id("ada.lovelace_1-x"));
  for (const char* bad : {"", ".", "..", "a:b", "a b", "a/b"}) CHECK_FALSE(platform::valid_unified_id(bad));
  CHECK_FALSE(platform::valid_unified_id(std::string(65, 'a')));
}

TEST_CASE("identity: stargazer identity link, show and unlink", "[identity][cli]") {
  gateway_fixture g(false);

  auto [linked, out] = sg(g, {"identity", "link", "discord:123", "matrix:@someone:example.org", "webchat:someone-01"});
  INFO(out);
  REQUIRE(linked == 0);
  CHECK(contains(out, "linked to a new unified id"));
  const auto id = printed(out, "unified_id");
  REQUIRE(id.size() == 16);
  CHECK(printed(out, "accounts") == "discord:123");
  CHECK(contains(out, "            matrix:@someone:example.org\n"));

  auto [shown, shown_out] = sg(g, {"identity", "show", "matrix:@someone:example.org"});
  CHECK(shown == 0);
  CHECK(printed(shown_out, "unified_id") == id);
  auto [shown_json, json_out] = sg(g, {"identity", "show", id, "--json"});
  CHECK(shown_json == 0);
  rapidjson::Document d;
  d.Parse(json_out.c_str(), json_out.size());
  REQUIRE_FALSE(d.HasParseError());
  CHECK(d["accounts"].Size() == 3);

  // Two people: refused with the REST API's message, then merged.
  REQUIRE(sg(g, {"identity", "link", "--id", "other", "slack:U1"}).first == 0);
  auto [refused, refused_out] = sg(g, {"identity", "link", "slack:U1", "discord:123"});
  CHECK(refused == 1);
  CHECK(contains(refused_out, "stargazer: error: "));
  CHECK(contains(refused_out, "identity_conflict"));
  CHECK(contains(refused_out, "--merge"));
  auto [merged, merged_out] = sg(g, {"identity", "link", "--merge", "slack:U1", "discord:123"});
  INFO(merged_out);
  CHECK(merged == 0);
  CHECK(contains(merged_out, "linked to unified id other (merged " + id + " into it)"));

  auto [unlinked, unlinked_out] = sg(g, {"identity", "unlink", "discord:123"});
  CHECK(unlinked == 0);
  CHECK(contains(unlinked_out, "unlinked discord:123 from unified id other"));
  auto [gone, gone_out] = sg(g, {"identity", "show", "discord:123"});
  CHECK(gone == 1);
  CHECK(contains(gone_out, "identity_not_found"));

  // Bad usage exits 2 naming what is missing.
  auto [usage, usage_out] = sg(g, {"identity", "link"});
  CHECK(usage == 2);
  CHECK(contains(usage_out, "ACCOUNT"));
  auto [no_key, no_key_out] = sg(g, {"identity", "show", "discord:1"}, {"SG_ADMIN_API_KEY="});
  CHECK(no_key == 2);
  CHECK(contains(no_key_out, "--admin-key"));
}
