// Tools from MCP servers: the pool and the registry against real servers (the scripted
// server of test/support/mcp for faults, the official npm servers for fidelity), and the
// real binary: a turn calling the `everything` server over stdio and Streamable HTTP, a
// memory kept across turns, and the tools role serving MCP tools to a remote worker.

#include "stargazer/core/service.hpp"
#include "stargazer/redis/connection.hpp"
#include "stargazer/tools/mcp/servers.hpp"
#include "stargazer/tools/registry.hpp"

#include "api_client.hpp"
#include "child_process.hpp"
#include "fake_llm_server.hpp"
#include "raw_http.hpp"
#include "redis_server.hpp"
#include "run_coro.hpp"
#include "wait_until.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

using namespace stargazer;
using namespace stargazer::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace mcp = stargazer::tools::mcp;

namespace {

std::string source_path(const std::string& relative) { return std::string(STARGAZER_SOURCE_DIR) + "/" + relative; }

const std::string scripted_server = source_path("test/support/mcp/scripted_server.py");
const std::string everything_server =
    source_path("test/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
const std::string memory_server = source_path("test/mcp/node_modules/@modelcontextprotocol/server-memory/dist/index.js");

std::string temp_dir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "sg-mcp-XXXXXX").string();
  REQUIRE(::mkdtemp(pattern.data()) != nullptr);
  return pattern;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

mcp::server_config scripted(std::string name, std::vector<std::string> flags = {}) {
  mcp::server_config c;
  c.name = std::move(name);
  c.command = "/usr/bin/python3";
  c.args = {"-B", scripted_server};
  for (auto& f : flags) c.args.push_back(std::move(f));
  c.timeout = 5s;
  return c;
}

struct pool_fixture {
  explicit pool_fixture(std::map<std::string, tools::permission> permissions = {}) : registry(make_settings(std::move(permissions))) {
    conn.start();
  }
  ~pool_fixture() {
    if (pool) run_coro(io, pool->stop(2s));
    conn.stop();
  }

  static tools::registry_settings make_settings(std::map<std::string, tools::permission> permissions) {
    tools::registry_settings s;
    s.default_deadline = 5s;
    s.permissions = std::move(permissions);
    return s;
  }

  void start(std::vector<mcp::server_config> servers, std::chrono::milliseconds handshake = 5s) {
    mcp::pool_settings s;
    s.node_id = "test-node";
    s.client.handshake_timeout = handshake;
    s.client.min_backoff = 100ms;
    s.client.max_backoff = 1s;
    s.client.ping_interval = 500ms;  // pings go both ways during every test
    pool = std::make_unique<mcp::server_pool>(io.get_executor(), std::move(servers), registry, s, &conn, &metrics, &health);
    run_coro(io, pool->start());
  }

  mcp::server_status status(const std::string& name) const {
    for (const auto& s : pool->statuses())
      if (s.name == name) return s;
    FAIL("no server " << name);
    return {};
  }

  bool wait_for(std::function<bool()> done, std::chrono::milliseconds timeout = 15s) {
    return run_coro(io, eventually(std::move(done), timeout), timeout + 5s);
  }

  bool wait_ready(const std::string& name, std::uint64_t connections = 1) {
    return wait_for([&] {
      const auto s = status(name);
      return s.state == mcp::server_state::ready && s.connections >= connections;
    });
  }

  tools::tool_output call(const std::string& tool, const std::string& args, const std::string& platform = "redis") {
    tools::call_context ctx;
    ctx.platform = platform;
    ctx.channel_id = "room";
    ctx.user_id = "u1";
    return run_coro(io, registry.execute(tool, args, ctx), 30s);
  }

  redis_server redis;
  asio::io_context io;
  redis::connection conn{io.get_executor(), redis::settings_from_url(redis.url())};
  tools::registry registry;
  metrics::registry metrics;
  health_registry health;
  std::unique_ptr<mcp::server_pool> pool;
};

// Until something answers HTTP on the port (the everything server has no 200 route).
bool wait_listening(std::uint16_t port, std::chrono::milliseconds timeout = 20s) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (http_get(port, "/mcp").status != 0) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

bool listed(const std::vector<llm::tool_definition>& defs, const std::string& name) {
  return std::any_of(defs.begin(), defs.end(), [&](const auto& d) { return d.name == name; });
}

tools::call_context on(const std::string& platform) {
  tools::call_context c;
  c.platform = platform;
  c.channel_id = "room";
  c.user_id = "u1";
  return c;
}

}  // namespace

TEST_CASE("an MCP server's tools join the registry as {server}__{tool}, arguments checked by its schema",
          "[mcp][tools]") {
  pool_fixture f;
  f.start({scripted("scripted")});
  REQUIRE(f.wait_ready("scripted"));

  const auto* echo = f.registry.find("scripted__echo");
  REQUIRE(echo != nullptr);
  CHECK(echo->origin == "mcp:scripted");
  CHECK(echo->description == "Returns its text.");
  CHECK(listed(f.registry.definitions(on("redis")), "scripted__add_tool"));  // page 2 of tools/list

  CHECK(f.call("scripted__echo", R"({"text":"hello over stdio"})").text == "hello over stdio");
  // The schema refuses before the server sees anything.
  CHECK(f.call("scripted__echo", R"({"text":5})").text == "error: text: expected string, got integer");
  CHECK(f.call("scripted__echo", "{}").text == "error: text: missing required argument");
  // isError: a tool error for the model.
  CHECK(f.call("scripted__fail", "{}").text.rfind("error: ", 0) == 0);
  const auto image = f.call("scripted__image", "{}").text;
  CHECK(image.find("[image: image/png, ") != std::string::npos);

  const auto health = f.health.check();
  CHECK(health.ready);
  bool reported = false;
  for (const auto& [name, r] : health.checks)
    if (name == "mcp:scripted") reported = r.detail.rfind("ready: ", 0) == 0;
  CHECK(reported);
  const auto metrics = f.metrics.render();
  CHECK(metrics.find(R"(stargazer_mcp_tool_calls_total{server="scripted",tool="echo",outcome="ok"} 1)") != std::string::npos);
  CHECK(metrics.find(R"(stargazer_mcp_tool_calls_total{server="scripted",tool="fail",outcome="tool_error"} 1)") !=
        std::string::npos);
  CHECK(metrics.find(R"(stargazer_mcp_server_up{server="scripted"} 1)") != std::string::npos);
  CHECK(metrics.find(R"(stargazer_mcp_tool_call_seconds_count{server="scripted",tool="echo"} 1)") != std::string::npos);
}

TEST_CASE("permissions deny an MCP tool on one platform and allow it on another", "[mcp][tools]") {
  std::map<std::string, tools::permission> rules;
  rules["scripted__echo"].deny_platforms = {"discord"};
  pool_fixture f(rules);
  f.start({scripted("scripted")});
  REQUIRE(f.wait_ready("scripted"));
  CHECK_FALSE(listed(f.registry.definitions(on("discord")), "scripted__echo"));
  CHECK(listed(f.registry.definitions(on("redis")), "scripted__echo"));
  CHECK(f.call("scripted__echo", R"({"text":"no"})", "discord").text ==
        "error: permission denied: 'scripted__echo' is not allowed here");
  CHECK(f.call("scripted__echo", R"({"text":"yes"})", "redis").text == "yes");
}

TEST_CASE("an MCP server killed mid-call fails the call at once and is started again", "[mcp][tools]") {
  const auto dir = temp_dir();
  pool_fixture f;
  f.start({scripted("scripted", {"--pid-file", dir + "/pid"})});
  REQUIRE(f.wait_ready("scripted"));
  const auto first_pid = std::stoi(read_file(dir + "/pid"));

  std::optional<tools::tool_output> out;
  asio::co_spawn(f.io, f.registry.execute("scripted__sleep", R"({"seconds":30})", on("redis")),
                 [&](std::exception_ptr, tools::tool_output o) { out = std::move(o); });
  f.io.run_for(300ms);  // the call is in flight
  REQUIRE_FALSE(out);
  const auto killed_at = std::chrono::steady_clock::now();
  REQUIRE(::kill(first_pid, SIGKILL) == 0);
  REQUIRE(f.wait_for([&] { return out.has_value(); }, 5s));
  CHECK(std::chrono::steady_clock::now() - killed_at < 3s);
  INFO(out->text);
  CHECK(out->text.rfind("error: ", 0) == 0);
  CHECK(out->text.find("killed by signal 9") != std::string::npos);

  // Down meanwhile: not offered, and a call says why.
  REQUIRE(f.wait_ready("scripted", 2));
  CHECK(std::stoi(read_file(dir + "/pid")) != first_pid);
  CHECK(f.call("scripted__echo", R"({"text":"back"})").text == "back");
  std::filesystem::remove_all(dir);
}

TEST_CASE("an MCP call past its deadline is cancelled on the server", "[mcp][tools]") {
  const auto dir = temp_dir();
  pool_fixture f;
  auto c = scripted("scripted", {"--cancel-log", dir + "/cancelled"});
  c.timeout = 1s;
  f.start({c});
  REQUIRE(f.wait_ready("scripted"));
  const auto started = std::chrono::steady_clock::now();
  const auto out = f.call("scripted__sleep", R"({"seconds":10})");
  const auto took = std::chrono::steady_clock::now() - started;
  CHECK(out.text == "error: the MCP server 'scripted' did not answer tools/call within 1000 ms");
  CHECK(took >= 1s);
  CHECK(took < 3s);
  // notifications/cancelled named the request: the server stopped working on it.
  CHECK(f.wait_for([&] { return !read_file(dir + "/cancelled").empty(); }, 5s));
  CHECK(f.status("scripted").state == mcp::server_state::ready);  // the connection stays
  CHECK(f.call("scripted__echo", R"({"text":"still here"})").text == "still here");
  std::filesystem::remove_all(dir);
}

TEST_CASE("notifications/tools/list_changed brings a new tool into the registry", "[mcp][tools]") {
  pool_fixture f;
  f.start({scripted("scripted")});
  REQUIRE(f.wait_ready("scripted"));
  CHECK(f.registry.find("scripted__fresh") == nullptr);
  CHECK(f.call("scripted__add_tool", R"({"name":"fresh"})").text == "added tool fresh");
  REQUIRE(f.wait_for([&] { return f.registry.find("scripted__fresh") != nullptr; }, 5s));
  CHECK(listed(f.registry.definitions(on("redis")), "scripted__fresh"));
}

TEST_CASE("garbage on an MCP server's stdout and a 50 MiB result are survived with clear errors", "[mcp][tools]") {
  pool_fixture f;
  f.start({scripted("noisy", {"--garbage-first"}), scripted("mute", {"--only-garbage"})}, 2s);
  REQUIRE(f.wait_ready("noisy"));
  CHECK(f.call("noisy__garbage", "{}").text.find("error") == std::string::npos);
  CHECK(f.status("noisy").invalid_messages >= 2);

  const auto big = f.call("noisy__big", R"({"mib":50})");
  INFO(big.text.substr(0, 300));
  CHECK(big.text.rfind("error: ", 0) == 0);
  CHECK(big.text.find("larger than 16777216 bytes") != std::string::npos);
  REQUIRE(f.wait_ready("noisy", 2));  // started again
  CHECK(f.call("noisy__echo", R"({"text":"after"})").text == "after");

  // A server that never speaks JSON-RPC never becomes ready; nothing of it is offered.
  REQUIRE(f.wait_for([&] { return f.status("mute").state == mcp::server_state::down; }, 10s));
  CHECK(f.status("mute").detail.find("did not answer initialize within 2000 ms") != std::string::npos);
  for (const auto& d : f.registry.definitions(on("redis"))) CHECK(d.name.rfind("mute__", 0) != 0);
}

TEST_CASE("an MCP server that cannot start is down, saying why", "[mcp][tools]") {
  pool_fixture f;
  mcp::server_config missing;
  missing.name = "missing";
  missing.command = "/nonexistent/mcp-server";
  f.start({missing});
  REQUIRE(f.wait_for([&] { return f.status("missing").state == mcp::server_state::down; }, 10s));
  INFO(f.status("missing").detail);
  CHECK(f.status("missing").detail.find("/nonexistent/mcp-server") != std::string::npos);
}

TEST_CASE("the MCP catalog in Redis lets a remote worker offer the tools of servers it does not run", "[mcp][tools]") {
  pool_fixture f;
  f.start({scripted("scripted")});
  REQUIRE(f.wait_ready("scripted"));
  tools::registry worker_registry;
  mcp::catalog_reader reader(f.conn, worker_registry, 100ms);
  const auto read_catalog_until = [&](const std::function<bool()>& done) {
    for (int i = 0; i < 100; ++i) {
      run_coro(f.io, reader.start());  // reads once
      run_coro(f.io, reader.stop(0ms));
      if (done()) return true;
      f.io.run_for(100ms);
    }
    return false;
  };
  REQUIRE(read_catalog_until([&] { return listed(worker_registry.definitions(on("redis")), "scripted__echo"); }));
  const auto* echo = worker_registry.find("scripted__echo");
  REQUIRE(echo != nullptr);
  CHECK(echo->origin == "mcp:scripted");
  CHECK(echo->deadline == 7s);  // the server's timeout, and the registry's margin
  // The pool stopping marks the server stopped in the catalog: the worker stops offering it.
  run_coro(f.io, f.pool->stop(2s));
  f.pool.reset();
  CHECK(read_catalog_until([&] { return !listed(worker_registry.definitions(on("redis")), "scripted__echo"); }));
  CHECK(worker_registry.list().front().name == "scripted__add_tool");
  CHECK_FALSE(worker_registry.list().front().available);
}

// ---------------------------------------------------------------------------------------
// The real binary

namespace {

std::string readyz(std::uint16_t port) { return http_request(port, "GET", "/readyz", "", "").body; }

// The "mcp:{name}" check of /readyz says the server is ready.
bool server_ready(std::uint16_t port, const std::string& name) {
  const auto body = readyz(port);
  const auto at = body.find("\"mcp:" + name + "\"");
  return at != std::string::npos && body.find("\"detail\":\"ready", at) < body.find('}', at);
}

}  // namespace

TEST_CASE("a turn calls the everything server over stdio and over Streamable HTTP, and the memory server remembers",
          "[process][e2e][mcp]") {
  REQUIRE(std::filesystem::exists(everything_server));  // scripts/deps.sh installs it (SG_DEPS_TEST_SERVERS=1)
  const auto dir = temp_dir();
  redis_server redis;
  fake_llm_server llm;
  const auto http_port = free_port();
  child_process everything_http({"node", everything_server, "streamableHttp"},
                                {"PORT=" + std::to_string(http_port), "PATH=" + std::string(std::getenv("PATH"))});
  const auto servers = R"({"ev": {"command": "node", "args": [")" + everything_server +
                       R"(", "stdio"], "env": ["PATH"]}, "evhttp": {"url": "http://127.0.0.1:)" +
                       std::to_string(http_port) + R"(/mcp"}, "memory": {"command": "node", "args": [")" +
                       memory_server + R"("], "env": ["PATH", "MEMORY_FILE_PATH=)" + dir + R"(/memory.jsonl"]}})";
  const auto port = free_port();
  child_process standalone({STARGAZER_BINARY, "--role=standalone", "--http-port=" + std::to_string(port),
                            "--redis-url=" + redis.url(), "--llm-provider=openai", "--llm-base-url=" + llm.base_url()},
                           {"SG_ADMIN_API_KEY=admin-key", "SG_MCP_SERVERS=" + servers});
  REQUIRE(wait_for_http(port, 20s, "/readyz"));
  const bool all_ready = wait_until(
      [&] { return server_ready(port, "ev") && server_ready(port, "evhttp") && server_ready(port, "memory"); }, 30s);
  INFO(readyz(port));
  INFO(standalone.output());
  REQUIRE(all_ready);

  llm.push(fake_reply::tool_calls({{"ev__echo", R"({"message":"over stdio"})"}}));
  llm.push(fake_reply::reply("it said so"));
  CHECK(inject_and_wait(port, "echo something").find("it said so") != std::string::npos);
  REQUIRE(llm.request_count() == 2);
  CHECK(llm.requests()[0].body.find(R"("name":"evhttp__get-sum")") != std::string::npos);  // offered to the model
  CHECK(llm.requests()[1].body.find("Echo: over stdio") != std::string::npos);

  llm.push(fake_reply::tool_calls({{"evhttp__get-sum", R"({"a":2,"b":3})"}}));
  llm.push(fake_reply::reply("five"));
  CHECK(inject_and_wait(port, "add 2 and 3").find("five") != std::string::npos);
  REQUIRE(llm.request_count() == 4);
  CHECK(llm.requests()[3].body.find("The sum of 2 and 3 is 5.") != std::string::npos);

  // A long-term memory: a fact stored in one turn is found in a later one.
  llm.push(fake_reply::tool_calls(
      {{"memory__create_entities", R"({"entities":[{"name":"Ada","entityType":"person","observations":["drinks green tea"]}]})"}}));
  llm.push(fake_reply::reply("noted"));
  CHECK(inject_and_wait(port, "remember that Ada drinks green tea").find("noted") != std::string::npos);
  llm.push(fake_reply::tool_calls({{"memory__search_nodes", R"({"query":"Ada"})"}}));
  llm.push(fake_reply::reply("she drinks green tea"));
  CHECK(inject_and_wait(port, "what does Ada drink?").find("she drinks green tea") != std::string::npos);
  REQUIRE(llm.request_count() == 8);
  CHECK(llm.requests()[7].body.find("drinks green tea") != std::string::npos);

  const auto metrics = http_request(port, "GET", "/metrics", "", "").body;
  CHECK(metrics.find(R"(stargazer_mcp_tool_calls_total{server="evhttp",tool="get-sum",outcome="ok"} 1)") !=
        std::string::npos);

  standalone.signal(SIGTERM);
  CHECK(standalone.wait(10s) == 0);
  everything_http.signal(SIGTERM);
  everything_http.wait(5s);
  std::filesystem::remove_all(dir);
}

TEST_CASE("the tools role runs the MCP servers, a remote worker offers their tools, and `tools list` shows them",
          "[process][e2e][mcp]") {
  redis_server redis;
  fake_llm_server llm;
  const auto port = free_port();
  const auto health_port = free_port();
  const auto servers =
      R"({"scripted": {"command": "/usr/bin/python3", "args": ["-B", ")" + scripted_server + R"("]}})";
  child_process gateway({STARGAZER_BINARY, "--role=gateway", "--http-port=" + std::to_string(port),
                         "--redis-url=" + redis.url()},
                        {"SG_ADMIN_API_KEY=admin-key"});
  child_process tools_process({STARGAZER_BINARY, "--role=tools", "--redis-url=" + redis.url(), "--node-id=tools-1",
                               "--health-port=" + std::to_string(health_port), "--mcp-servers=" + servers});
  child_process worker({STARGAZER_BINARY, "--role=worker", "--redis-url=" + redis.url(), "--node-id=worker-1",
                        "--tools-mode=remote", "--llm-provider=openai", "--llm-base-url=" + llm.base_url()});
  REQUIRE(wait_for_http(port, 20s, "/readyz"));
  REQUIRE(wait_for_http(health_port, 20s, "/readyz"));
  REQUIRE(wait_until([&] { return server_ready(health_port, "scripted"); }, 20s));

  // The worker learns the tools from the catalog within its 5 s refresh.
  bool offered = false;
  for (int turn = 0; turn < 8 && !offered; ++turn) {
    inject_and_wait(port, "are you there?");
    offered = llm.requests().back().body.find(R"("name":"scripted__echo")") != std::string::npos;
    if (!offered) std::this_thread::sleep_for(1s);
  }
  REQUIRE(offered);
  const auto before = llm.request_count();
  llm.push(fake_reply::tool_calls({{"scripted__echo", R"({"text":"from the tools process"})"}}));
  llm.push(fake_reply::reply("done"));
  CHECK(inject_and_wait(port, "use the echo").find("done") != std::string::npos);
  REQUIRE(llm.request_count() == before + 2);
  CHECK(llm.requests()[before + 1].body.find("from the tools process") != std::string::npos);
  CHECK(redis.cli({"XLEN", "sg:stream:tools"}) == "1");  // it ran on the tools service

  auto [status, out] = run_process({STARGAZER_BINARY, "tools", "list", "--json", "--redis-url=" + redis.url()});
  INFO(out);
  CHECK(status == 0);
  CHECK(out.find(R"({"name":"scripted__echo","origin":"mcp:scripted","available":true)") != std::string::npos);
  CHECK(out.find(R"({"name":"calculator","origin":"built-in","available":true)") != std::string::npos);
  CHECK(out.find(R"("servers":[{"name":"scripted","state":"ready")") != std::string::npos);

  // The tools process stops: the catalog says so and `tools list` shows the tools unavailable.
  tools_process.signal(SIGTERM);
  CHECK(tools_process.wait(10s) == 0);
  auto [status2, out2] = run_process({STARGAZER_BINARY, "tools", "list", "--redis-url=" + redis.url()});
  INFO(out2);
  CHECK(status2 == 0);
  CHECK(out2.find("scripted__echo") != std::string::npos);
  CHECK(out2.find("its MCP server is stopped") != std::string::npos);

  for (auto* p : {&worker, &gateway}) p->signal(SIGTERM);
  CHECK(worker.wait(5s) == 0);
  CHECK(gateway.wait(5s) == 0);
}

TEST_CASE("a Streamable HTTP server that restarts loses the session, and the client initialises a new one",
          "[mcp][tools]") {
  REQUIRE(std::filesystem::exists(everything_server));  // scripts/deps.sh installs it (SG_DEPS_TEST_SERVERS=1)
  const auto http_port = free_port();
  const std::vector<std::string> env{"PORT=" + std::to_string(http_port), "PATH=" + std::string(std::getenv("PATH"))};
  auto server = std::make_unique<child_process>(std::vector<std::string>{"node", everything_server, "streamableHttp"}, env);
  REQUIRE(wait_listening(http_port));
  pool_fixture f;
  mcp::server_config c;
  c.name = "web";
  c.url = "http://127.0.0.1:" + std::to_string(http_port) + "/mcp";
  f.start({c});
  REQUIRE(f.wait_ready("web"));
  CHECK(f.call("web__echo", R"({"message":"first session"})").text == "Echo: first session");

  server->signal(SIGKILL);
  server->wait(5s);
  server = std::make_unique<child_process>(std::vector<std::string>{"node", everything_server, "streamableHttp"}, env);
  REQUIRE(wait_listening(http_port));
  // The event stream (or the next request) finds the session gone: a new one is made.
  REQUIRE(f.wait_ready("web", 2));
  CHECK(f.call("web__echo", R"({"message":"second session"})").text == "Echo: second session");
}
