// `stargazer chat`, `stargazer instance ...` and `stargazer user ...` run as the real
// binary against an in-process gateway (gateway_fixture: the REST API and an echo worker
// that answers "echo: <text>" and sends attachments back as files).

#include "api_client.hpp"
#include "child_process.hpp"
#include "gateway_fixture.hpp"
#include "raw_http.hpp"
#include "redis_server.hpp"
#include "wait_until.hpp"

#include <catch2/catch.hpp>
#include <rapidjson/document.h>

#include <chrono>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace stargazer::test;
using namespace std::chrono_literals;

namespace {

const std::string admin_env = std::string("SG_ADMIN_API_KEY=") + gateway_fixture::admin_key;

std::string url_of(const gateway_fixture& g) { return "http://127.0.0.1:" + std::to_string(g.port()); }

// Runs `stargazer <args> --url <the gateway>`, with the admin key in the environment.
std::pair<int, std::string> sg(const gateway_fixture& g, std::vector<std::string> args,
                               std::optional<std::string> input = std::nullopt,
                               std::vector<std::string> env = {admin_env}) {
  std::vector<std::string> argv{STARGAZER_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--url");
  argv.push_back(url_of(g));
  return run_process(argv, std::move(env), std::chrono::seconds(30), std::move(input));
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The cells of a table line: text separated by two or more spaces.
std::vector<std::string> cells(const std::string& line) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < line.size()) {
    const auto gap = line.find("  ", i);
    out.push_back(line.substr(i, gap - i));
    if (gap == std::string::npos) break;
    i = line.find_first_not_of(' ', gap);
  }
  return out;
}

// The table row whose first cell is `first` (empty when there is none).
std::vector<std::string> row_of(const std::string& table, const std::string& first) {
  for (const auto& line : lines_of(table))
    if (auto c = cells(line); !c.empty() && c[0] == first) return c;
  return {};
}

// The rest of the line after `prefix` (empty when `prefix` is not in `text`).
std::string after(const std::string& text, const std::string& prefix) {
  const auto at = text.find(prefix);
  if (at == std::string::npos) return {};
  const auto start = at + prefix.size();
  return text.substr(start, text.find('\n', start) - start);
}

rapidjson::Document parse(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.c_str(), text.size());
  INFO(text);
  REQUIRE_FALSE(d.HasParseError());
  return d;
}

}  // namespace

TEST_CASE("instance create, list and delete with the admin key", "[cli]") {
  gateway_fixture g(false);

  auto [created, out] = sg(g, {"instance", "create", "--id", "bot1", "--name", "Test Bot"});
  INFO(out);
  REQUIRE(created == 0);
  CHECK(contains(out, "instance_id  bot1\n"));
  CHECK(contains(out, "name         Test Bot\n"));
  CHECK(contains(out, "shown only this once"));
  const auto key = after(out, "api_key      ");
  REQUIRE(key.size() > 32);
  // The printed key opens the instance.
  CHECK(call(g.port(), "GET", "/redis-platform/instances/bot1", bearer(key)).status == 200);

  auto [created_json, json_out] = sg(g, {"instance", "create", "--json"});
  REQUIRE(created_json == 0);
  const auto second = parse(lines_of(json_out).at(0));
  const std::string second_id = second["instance_id"].GetString();
  CHECK(std::string(second["api_key"].GetString()).size() > 32);

  auto [listed, table] = sg(g, {"instance", "list"});
  INFO(table);
  CHECK(listed == 0);
  const auto rows = lines_of(table);
  REQUIRE(rows.size() == 3);
  CHECK(cells(rows[0]) == std::vector<std::string>{"INSTANCE", "NAME", "CREATED"});
  const auto bot1 = row_of(table, "bot1");
  REQUIRE(bot1.size() == 3);
  CHECK(bot1[1] == "Test Bot");
  CHECK(bot1[2].starts_with("20"));
  CHECK(row_of(table, second_id).size() == 3);

  auto [listed_json, list_json] = sg(g, {"instance", "list", "--json"});
  CHECK(listed_json == 0);
  CHECK(parse(list_json)["instances"].Size() == 2);

  auto [duplicate, duplicate_out] = sg(g, {"instance", "create", "--id", "bot1"});
  CHECK(duplicate == 1);
  CHECK(contains(duplicate_out, "stargazer: error: instance 'bot1' already exists (HTTP 409 instance_exists)"));

  auto [deleted, deleted_out] = sg(g, {"instance", "delete", "bot1"});
  CHECK(deleted == 0);
  CHECK(contains(deleted_out, "deleted instance bot1"));
  CHECK_FALSE(contains(sg(g, {"instance", "list"}).second, "bot1"));

  auto [again, again_out] = sg(g, {"instance", "delete", "bot1"});
  CHECK(again == 1);
  CHECK(lines_of(again_out) ==
        std::vector<std::string>{"stargazer: error: no instance 'bot1' (HTTP 404 instance_not_found)"});
}

TEST_CASE("user add, list and remove with the admin key", "[cli]") {
  gateway_fixture g(false);
  const auto inst = create_instance(g);

  auto [empty, empty_out] = sg(g, {"user", "list", "--instance", inst.id});
  CHECK(empty == 0);
  CHECK(contains(empty_out, "no registered users"));

  auto [added, added_out] = sg(g, {"user", "add", "--instance", inst.id, "ada", "--name", "Ada Lovelace"});
  CHECK(added == 0);
  CHECK(contains(added_out, "registered user ada (Ada Lovelace) on instance " + inst.id));
  auto [added_json, added_json_out] =
      sg(g, {"user", "add", "bob"}, std::nullopt, {admin_env, "SG_INSTANCE=" + inst.id});  // the id from the env
  CHECK(added_json == 0);

  auto [listed, table] = sg(g, {"user", "list", "--instance", inst.id});
  INFO(table);
  CHECK(listed == 0);
  CHECK(cells(lines_of(table).at(0)) == std::vector<std::string>{"USER", "NAME", "REGISTERED"});
  const auto ada = row_of(table, "ada");
  REQUIRE(ada.size() == 3);
  CHECK(ada[1] == "Ada Lovelace");
  CHECK(ada[2].starts_with("20"));
  const auto bob = row_of(table, "bob");
  REQUIRE(bob.size() == 3);
  CHECK(bob[1] == "bob");  // the name defaults to the id

  auto [listed_json, list_json] = sg(g, {"user", "list", "--instance", inst.id, "--json"});
  CHECK(listed_json == 0);
  CHECK(parse(list_json)["users"].Size() == 2);

  auto [removed, removed_out] = sg(g, {"user", "remove", "--instance", inst.id, "ada"});
  CHECK(removed == 0);
  CHECK(contains(removed_out, "removed user ada from instance " + inst.id));
  auto [gone, gone_out] = sg(g, {"user", "remove", "--instance", inst.id, "ada"});
  CHECK(gone == 1);
  CHECK(contains(gone_out, "stargazer: error: no user 'ada' (HTTP 404 user_not_found)"));
  auto [no_instance, no_instance_out] = sg(g, {"user", "list", "--instance", "nope"});
  CHECK(no_instance == 1);
  CHECK(contains(no_instance_out, "no instance 'nope'"));
}

TEST_CASE("chat with piped stdin prints each reply once and exits 0 at the end of input", "[cli]") {
  gateway_fixture g;
  const auto inst = create_instance(g);

  auto [status, out] = sg(g, {"chat", "--instance", inst.id, "--key", inst.key, "--user-id", "u1"},
                          std::string("hello\n\n  \nsecond line\nno newline at the end"));
  INFO(out);
  CHECK(status == 0);
  CHECK(lines_of(out) == std::vector<std::string>{"Star: echo: hello", "Star: echo: second line",
                                                  "Star: echo: no newline at the end"});

  SECTION("/quit stops reading; the environment names the instance and the key") {
    auto [quit, quit_out] = sg(g, {"chat"}, std::string("one\n/quit\ntwo\n"),
                               {"SG_INSTANCE=" + inst.id, "SG_INSTANCE_KEY=" + inst.key});
    INFO(quit_out);
    CHECK(quit == 0);
    CHECK(lines_of(quit_out) == std::vector<std::string>{"Star: echo: one"});
  }
  SECTION("empty input: nothing is sent") {
    auto [none, none_out] = sg(g, {"chat", "--instance", inst.id, "--key", inst.key}, std::string());
    CHECK(none == 0);
    CHECK(none_out.empty());
  }
  SECTION("a registered user's display name is used; others are refused with the API's reason") {
    REQUIRE(sg(g, {"user", "add", "--instance", inst.id, "ada"}).first == 0);
    auto [refused, refused_out] =
        sg(g, {"chat", "--instance", inst.id, "--key", inst.key, "--user-id", "mallory"}, std::string("hi\n"));
    CHECK(refused == 1);
    CHECK(contains(refused_out, "stargazer: error: this instance has a closed roster; register the user first "
                                "(HTTP 403 user_not_registered)"));
    auto [ok, ok_out] = sg(g, {"chat", "--instance", inst.id, "--key", inst.key, "--user-id", "ada"},
                           std::string("hi\n"));
    CHECK(ok == 0);
    CHECK(lines_of(ok_out) == std::vector<std::string>{"Star: echo: hi"});
  }
}

TEST_CASE("chat shows replies of other turns and files as they arrive, with full file URLs", "[cli]") {
  gateway_fixture g;
  const auto inst = create_instance(g);
  child_process chat({STARGAZER_BINARY, "chat", "--url", url_of(g), "--instance", inst.id, "--key", inst.key},
                     {}, true);
  REQUIRE(chat.write_stdin("first\n"));
  REQUIRE(wait_until([&] { return contains(chat.output(), "Star: echo: first\n"); }, 10s));

  // Another user's message with an attachment, posted behind chat's back: its replies
  // arrive only over the event stream.
  const std::string body =
      R"({"text":"from elsewhere","user_id":"u2","user_name":"Bo",)"
      R"("attachments":[{"data":"aGVsbG8gZmlsZQ==","mimetype":"text/plain","filename":"my note.txt"}]})";
  REQUIRE(call(g.port(), "POST", "/redis-platform/instances/" + inst.id + "/messages", bearer(inst.key), body).status ==
          202);
  REQUIRE(wait_until([&] { return contains(chat.output(), "[file]"); }, 10s));
  const auto out = chat.output();
  INFO(out);
  CHECK(contains(out, "Star: echo: from elsewhere\n"));
  const auto path = "/redis-platform/files/" +
                    after(out, "Star: [file] my note.txt (text/plain, 10 B) " + url_of(g) + "/redis-platform/files/");
  INFO(path);
  CHECK(path.ends_with("/my%20note.txt"));  // the file name is URL-encoded
  const auto file_id = path.substr(22, path.find('/', 22) - 22);
  CHECK(file_id.size() == 32);
  CHECK(file_id.find_first_not_of("0123456789abcdef") == std::string::npos);
  const auto file = http_get(g.port(), path);
  CHECK(file.status == 200);
  CHECK(file.body == "hello file");

  chat.close_stdin();
  CHECK(chat.wait(10s) == 0);
  CHECK(lines_of(chat.output()).size() == 3);
}

TEST_CASE("chat and operator commands: a wrong key or an unreachable gateway exit 1 with one clear line", "[cli]") {
  gateway_fixture g(false);
  const auto inst = create_instance(g);

  auto [wrong, wrong_out] = sg(g, {"chat", "--instance", inst.id, "--key", "not-the-key"}, std::string("hi\n"));
  CHECK(wrong == 1);
  CHECK(lines_of(wrong_out) == std::vector<std::string>{"stargazer: error: this key does not open instance '" +
                                                        inst.id + "' (HTTP 403 forbidden)"});

  auto [wrong_admin, wrong_admin_out] =
      sg(g, {"instance", "list"}, std::nullopt, {"SG_ADMIN_API_KEY=not-the-admin-key"});
  CHECK(wrong_admin == 1);
  CHECK(contains(wrong_admin_out, "stargazer: error: this route needs the admin key (HTTP 403 forbidden)"));

  auto [unknown, unknown_out] = sg(g, {"chat", "--instance", "nope"}, std::string("hi\n"));
  CHECK(unknown == 1);
  CHECK(contains(unknown_out, "stargazer: error: no instance 'nope' (HTTP 404 instance_not_found)"));

  const auto nowhere = "http://127.0.0.1:" + std::to_string(free_port());
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"chat", "--instance", inst.id, "--key", inst.key}, {"instance", "list"}, {"user", "list", "--instance", "i"}}) {
    std::vector<std::string> argv{STARGAZER_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back("--url=" + nowhere);
    auto [status, out] = run_process(argv, {admin_env}, 30s, std::string("hi\n"));
    INFO(args.front() << ": " << out);
    CHECK(status == 1);
    CHECK(lines_of(out) == std::vector<std::string>{"stargazer: error: cannot reach the gateway at " + nowhere +
                                                    ": Connection refused"});
  }
}

TEST_CASE("chat and operator commands: bad flags exit 2 naming the flag", "[cli]") {
  gateway_fixture g(false);
  struct bad_usage {
    std::vector<std::string> args;
    std::string flag;
    std::vector<std::string> env{admin_env};
  };
  const std::vector<bad_usage> cases{
      {{"instance", "list", "--colour"}, "--colour"},
      {{"instance", "delete"}, "ID"},
      {{"user", "add", "ada"}, "--instance"},
      {{"chat", "--instance", "i", "--key", "k", "--url=ftp://x"}, "--url"},
      {{"chat", "--instance", "i"}, "--key", {"SG_ADMIN_API_KEY="}},
      {{"instance", "list"}, "--admin-key", {"SG_ADMIN_API_KEY="}},
  };
  for (const auto& c : cases) {
    auto [status, out] = sg(g, c.args, std::string("hi\n"), c.env);
    INFO(out);
    CHECK(status == 2);
    CHECK(lines_of(out).size() == 1);
    CHECK(contains(out, "stargazer: error: "));
    CHECK(contains(out, c.flag));
  }
}
