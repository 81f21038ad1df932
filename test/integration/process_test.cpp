// The real binary: help, bad flags, and the gateway's lifecycle under SIGTERM.

#include "api_client.hpp"
#include "child_process.hpp"
#include "fake_llm_server.hpp"
#include "raw_http.hpp"
#include "redis_server.hpp"
#include "wait_until.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <future>
#include <stdlib.h>
#include <thread>

using namespace stargazer::test;
using namespace std::chrono_literals;

TEST_CASE("stargazer --help shows roles and options", "[process]") {
  auto [status, out] = run_process({STARGAZER_BINARY, "--help"});
  CHECK(status == 0);
  CHECK(out.find("--role") != std::string::npos);
  CHECK(out.find("gateway") != std::string::npos);
  CHECK(out.find("--redis-url") != std::string::npos);
}

TEST_CASE("a bad flag exits 2 naming the flag", "[process]") {
  auto [status, out] = run_process({STARGAZER_BINARY, "--http-port=abc"});
  CHECK(status == 2);
  CHECK(out.find("--http-port") != std::string::npos);
  auto [status2, out2] = run_process({STARGAZER_BINARY, "--role=janitor"});
  CHECK(status2 == 2);
  CHECK(out2.find("--role") != std::string::npos);
}

TEST_CASE("config print redacts secrets from the environment", "[process]") {
  auto [status, out] = run_process({STARGAZER_BINARY, "config", "print"},
                                   {"SG_ADMIN_API_KEY=very-secret-admin", "SG_LLM_API_KEY=very-secret-llm"});
  CHECK(status == 0);
  CHECK(out.find("very-secret") == std::string::npos);
  CHECK(out.find("admin-api-key = \"<redacted>\"") != std::string::npos);
}

TEST_CASE("the gateway serves health, readiness and metrics, and exits 0 within 5 s of SIGTERM", "[process]") {
  redis_server redis;
  const auto port = free_port();
  child_process gateway(
      {STARGAZER_BINARY, "--role=gateway", "--http-port=" + std::to_string(port), "--redis-url=" + redis.url()});
  REQUIRE(wait_for_http(port, std::chrono::seconds(10)));
  wait_for_http(port, std::chrono::seconds(10), "/readyz");
  auto ready = http_get(port, "/readyz");
  CHECK(ready.status == 200);
  CHECK(ready.body.find("\"redis\":{\"ready\":true") != std::string::npos);
  CHECK(redis.cli({"XINFO", "GROUPS", "sg:stream:inbound"}).find("sg:workers") != std::string::npos);
  auto metrics = http_get(port, "/metrics");
  CHECK(metrics.status == 200);
  CHECK(metrics.body.find("# TYPE stargazer_http_requests_total counter") != std::string::npos);

  const auto signalled = std::chrono::steady_clock::now();
  gateway.signal(SIGTERM);
  const auto status = gateway.wait(std::chrono::seconds(5));
  REQUIRE(status);
  CHECK(*status == 0);
  CHECK(std::chrono::steady_clock::now() - signalled < std::chrono::seconds(5));
  INFO(gateway.output());
  CHECK(gateway.output().find("stopping") != std::string::npos);
}

TEST_CASE("readyz is 503 naming Redis while it is unreachable, 200 once it answers", "[process]") {
  redis_server redis;
  redis.stop();
  const auto port = free_port();
  child_process gateway(
      {STARGAZER_BINARY, "--role=gateway", "--http-port=" + std::to_string(port), "--redis-url=" + redis.url()});
  REQUIRE(wait_for_http(port, std::chrono::seconds(10)));
  auto down = http_get(port, "/readyz");
  CHECK(down.status == 503);
  CHECK(down.body.find("\"redis\":{\"ready\":false") != std::string::npos);
  redis.start();
  wait_for_http(port, std::chrono::seconds(10), "/readyz");
  CHECK(http_get(port, "/readyz").status == 200);
  gateway.signal(SIGTERM);
  CHECK(gateway.wait(std::chrono::seconds(5)) == 0);
}

TEST_CASE("JSON logs carry timestamp, level, component and message", "[process]") {
  const auto port = free_port();
  child_process gateway({STARGAZER_BINARY, "--role=gateway", "--log-format=json", "--http-port=" + std::to_string(port)});
  REQUIRE(wait_for_http(port, std::chrono::seconds(10)));
  gateway.signal(SIGTERM);
  REQUIRE(gateway.wait(std::chrono::seconds(5)) == 0);
  const auto out = gateway.output();
  const auto first_line = out.substr(0, out.find('\n'));
  CHECK(first_line.rfind("{\"ts\":\"", 0) == 0);
  CHECK(first_line.find("\"level\":\"info\"") != std::string::npos);
  CHECK(first_line.find("\"component\":") != std::string::npos);
  CHECK(first_line.find("\"msg\":") != std::string::npos);
}

TEST_CASE("an occupied port is a clear startup error with status 1", "[process]") {
  const auto port = free_port();
  child_process first({STARGAZER_BINARY, "--role=gateway", "--http-port=" + std::to_string(port)});
  REQUIRE(wait_for_http(port, std::chrono::seconds(10)));
  auto [status, out] = run_process({STARGAZER_BINARY, "--role=gateway", "--http-port=" + std::to_string(port)});
  CHECK(status == 1);
  CHECK(out.find(std::to_string(port)) != std::string::npos);
  first.signal(SIGTERM);
  CHECK(first.wait(std::chrono::seconds(5)) == 0);
}

namespace {

bool wait_ready(std::uint16_t port) { return wait_for_http(port, std::chrono::seconds(10), "/readyz"); }

}  // namespace

TEST_CASE("gateway and worker as separate processes answer a REST message end to end", "[process][e2e]") {
  redis_server redis;
  const auto port = free_port();
  child_process gateway({STARGAZER_BINARY, "--role=gateway", "--http-port=" + std::to_string(port),
                         "--redis-url=" + redis.url()},
                        {"SG_ADMIN_API_KEY=admin-key"});
  child_process worker({STARGAZER_BINARY, "--role=worker", "--redis-url=" + redis.url(), "--node-id=worker-1"});
  REQUIRE(wait_ready(port));
  const auto body = inject_and_wait(port, "ping through two processes");
  CHECK(body.find("\"complete\":true") != std::string::npos);
  CHECK(body.find("\"text\":\"ping through two processes\"") != std::string::npos);
  worker.signal(SIGTERM);
  gateway.signal(SIGTERM);
  CHECK(worker.wait(std::chrono::seconds(5)) == 0);
  CHECK(gateway.wait(std::chrono::seconds(5)) == 0);
}

TEST_CASE("standalone runs gateway and worker in one process", "[process][e2e]") {
  redis_server redis;
  const auto port = free_port();
  child_process standalone({STARGAZER_BINARY, "--role=standalone", "--http-port=" + std::to_string(port),
                            "--redis-url=" + redis.unix_url()},
                           {"SG_ADMIN_API_KEY=admin-key"});
  REQUIRE(wait_ready(port));
  CHECK(inject_and_wait(port, "hello standalone").find("\"text\":\"hello standalone\"") != std::string::npos);
  standalone.signal(SIGTERM);
  CHECK(standalone.wait(std::chrono::seconds(5)) == 0);
}

TEST_CASE("a gateway killed mid-request leaves its Idempotency-Key retryable and the retry injects nothing twice",
          "[process][e2e][idempotency]") {
  redis_server redis;
  const auto port = free_port();
  const std::vector<std::string> argv{STARGAZER_BINARY, "--role=gateway", "--http-port=" + std::to_string(port),
                                      "--redis-url=" + redis.url(), "--node-id=gw"};
  auto gateway = std::make_unique<child_process>(argv, std::vector<std::string>{"SG_ADMIN_API_KEY=admin-key"});
  REQUIRE(wait_ready(port));
  const std::string admin = "Authorization: Bearer admin-key\r\n";
  REQUIRE(http_request(port, "POST", "/redis-platform/instances", R"({"instance_id":"i1"})", admin).status == 201);
  const auto target = "/redis-platform/instances/i1/messages?wait=true&timeout=5";
  const auto body = std::string(R"({"text":"once","user_id":"u1","user_name":"Ada"})");
  const auto headers = admin + "Idempotency-Key: order-1\r\n";
  // No worker: the request waits for a reply while the gateway is killed.
  auto first = std::async(std::launch::async, [&] { return http_request(port, "POST", target, body, headers); });
  REQUIRE(wait_until([&] { return redis.cli({"XLEN", "sg:stream:inbound"}) == "1"; }, 5s));
  gateway->signal(SIGKILL);
  CHECK(first.get().status == 0);  // its answer is lost: the client must retry
  gateway->wait(5s);
  gateway = std::make_unique<child_process>(argv, std::vector<std::string>{"SG_ADMIN_API_KEY=admin-key"});
  REQUIRE(wait_ready(port));

  const auto claim = redis.cli({"--scan", "--pattern", "redis_platform:idem:i1:*"});
  // The claim of the dead request expires after its wait timeout and a margin, not in a day.
  std::string pending_key;
  for (std::size_t at = 0; at < claim.size();) {
    const auto end = std::min(claim.find('\n', at), claim.size());
    const auto key = claim.substr(at, end - at);
    if (key.find(":injected") == std::string::npos) pending_key = key;
    at = end + 1;
  }
  REQUIRE_FALSE(pending_key.empty());
  CHECK(redis.cli({"GET", pending_key}) == "pending");
  const auto ttl = std::stoi(redis.cli({"TTL", pending_key}));
  CHECK(ttl > 0);
  CHECK(ttl <= 5 + 10);
  CHECK(http_request(port, "POST", target, body, headers).status == 409);  // it might still be running

  redis.cli({"DEL", pending_key});  // as its expiry does
  auto retry = http_request(port, "POST", target, body, headers);
  INFO(retry.raw);
  CHECK(retry.status == 202);
  CHECK(retry.headers.find("Idempotent-Replayed: true") != std::string::npos);
  CHECK(retry.body.find("\"message_id\":\"") != std::string::npos);
  CHECK(redis.cli({"XLEN", "sg:stream:inbound"}) == "1");  // injected once
  auto again = http_request(port, "POST", target, body, headers);
  CHECK(again.status == 202);
  CHECK(again.body == retry.body);
  CHECK(redis.cli({"XLEN", "sg:stream:inbound"}) == "1");
  gateway->signal(SIGTERM);
  CHECK(gateway->wait(5s) == 0);
}

TEST_CASE("a worker answers through an OpenAI-compatible API and reloads its configuration live",
          "[process][e2e][worker]") {
  redis_server redis;
  fake_llm_server llm;
  const auto port = free_port();
  const auto config_path = redis.dir() + "/worker.toml";
  std::ofstream(config_path) << "llm-model = \"model-a\"\n";
  child_process gateway({STARGAZER_BINARY, "--role=gateway", "--http-port=" + std::to_string(port),
                         "--redis-url=" + redis.url()},
                        {"SG_ADMIN_API_KEY=admin-key"});
  child_process worker({STARGAZER_BINARY, "--role=worker", "--redis-url=" + redis.url(), "--node-id=worker-1",
                        "--config=" + config_path, "--llm-base-url=" + llm.base_url()},
                       {"SG_LLM_API_KEY=sk-test"});
  REQUIRE(wait_ready(port));
  llm.push(fake_reply::reply("hello from model a"));
  CHECK(inject_and_wait(port, "first").find("hello from model a") != std::string::npos);
  REQUIRE(llm.request_count() == 1);
  CHECK(llm.requests()[0].authorization == "Bearer sk-test");
  CHECK(llm.requests()[0].body.find(R"("model":"model-a")") != std::string::npos);

  std::ofstream(config_path) << "llm-model = \"model-b\"\nhistory-messages = 3\n";
  redis.cli({"PUBLISH", "sg:pubsub:config", R"({"event":"sys:config:updated"})"});
  REQUIRE(wait_until([&] { return worker.output().find("configuration reloaded") != std::string::npos; }, 5s));
  CHECK(inject_and_wait(port, "second").find("second") != std::string::npos);  // the server's echo fallback
  REQUIRE(llm.request_count() == 2);
  CHECK(llm.requests()[1].body.find(R"("model":"model-b")") != std::string::npos);

  // A broken file is refused and the running configuration kept.
  std::ofstream(config_path) << "llm-model = \"model-c\"\nno-such-key = 1\n";
  redis.cli({"PUBLISH", "sg:pubsub:config", R"({"event":"sys:config:updated"})"});
  REQUIRE(wait_until([&] { return worker.output().find("config reload refused") != std::string::npos; }, 5s));
  inject_and_wait(port, "third");
  CHECK(llm.requests().back().body.find(R"("model":"model-b")") != std::string::npos);

  worker.signal(SIGTERM);
  gateway.signal(SIGTERM);
  CHECK(worker.wait(5s) == 0);
  CHECK(gateway.wait(5s) == 0);
}

TEST_CASE("two workers: one holds the status lease, the other takes it when the holder stops",
          "[process][worker][lease]") {
  redis_server redis;
  const auto worker_args = [&](const std::string& id) {
    return std::vector<std::string>{STARGAZER_BINARY, "--role=worker", "--redis-url=" + redis.url(),
                                    "--node-id=" + id, "--presence-interval=0.2", "--llm-provider=echo"};
  };
  const auto health_port = free_port();
  auto a_args = worker_args("worker-a");
  a_args.push_back("--health-port=" + std::to_string(health_port));
  child_process a(a_args);
  child_process b(worker_args("worker-b"));
  REQUIRE(wait_ready(health_port));  // a worker's own /readyz (Redis, consumer groups)
  CHECK(http_get(health_port, "/metrics").body.find("stargazer_status_leader") != std::string::npos);
  std::string holder;
  REQUIRE(wait_until([&] {
    holder = redis.cli({"GET", "sg:leader:status"});
    return holder == "worker-a" || holder == "worker-b";
  }, 10s));
  // The holder publishes presence to the gateways.
  REQUIRE(wait_until([&] { return std::stoi(redis.cli({"XLEN", "sg:stream:outbound:redis"})) > 0; }, 5s));
  auto& leader = holder == "worker-a" ? a : b;
  const std::string other = holder == "worker-a" ? "worker-b" : "worker-a";
  leader.signal(SIGTERM);
  CHECK(leader.wait(5s) == 0);
  CHECK(wait_until([&] { return redis.cli({"GET", "sg:leader:status"}) == other; }, 5s));
  (holder == "worker-a" ? b : a).signal(SIGTERM);
  CHECK((holder == "worker-a" ? b : a).wait(5s) == 0);
}

TEST_CASE("tools role: a worker in remote mode has its tool calls run by a tools process", "[process][e2e][tools]") {
  redis_server redis;
  fake_llm_server llm;
  const auto port = free_port();
  child_process gateway({STARGAZER_BINARY, "--role=gateway", "--http-port=" + std::to_string(port),
                         "--redis-url=" + redis.url()},
                        {"SG_ADMIN_API_KEY=admin-key"});
  child_process tools({STARGAZER_BINARY, "--role=tools", "--redis-url=" + redis.url(), "--node-id=tools-1"});
  child_process worker({STARGAZER_BINARY, "--role=worker", "--redis-url=" + redis.url(), "--node-id=worker-1",
                        "--tools-mode=remote", "--llm-provider=openai", "--llm-base-url=" + llm.base_url()});
  REQUIRE(wait_ready(port));
  llm.push(fake_reply::tool_calls({{"calculator", R"({"expression":"2^10"})"}}));
  llm.push(fake_reply::reply("two to the tenth is 1024"));
  CHECK(inject_and_wait(port, "what is 2^10?").find("two to the tenth is 1024") != std::string::npos);
  REQUIRE(llm.request_count() == 2);
  CHECK(llm.requests()[1].body.find(R"("content":"1024")") != std::string::npos);
  CHECK(redis.cli({"XLEN", "sg:stream:tools"}) == "1");  // it went through the tools stream
  for (auto* p : {&worker, &tools, &gateway}) p->signal(SIGTERM);
  CHECK(worker.wait(5s) == 0);
  CHECK(tools.wait(5s) == 0);
  CHECK(gateway.wait(5s) == 0);
}

namespace {

std::string make_temp_dir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "sg-standalone-XXXXXX").string();
  REQUIRE(::mkdtemp(pattern.data()) != nullptr);
  return pattern;
}

// The value after `label` up to the next space or newline in `text`.
std::string word_after(const std::string& text, const std::string& label) {
  const auto at = text.find(label);
  if (at == std::string::npos) return {};
  const auto start = at + label.size();
  return text.substr(start, text.find_first_of(" \n", start) - start);
}

}  // namespace

TEST_CASE("standalone without a Redis URL runs its own redis-server, keeps data across restarts, prints the admin key",
          "[process][e2e][standalone]") {
  const auto data = make_temp_dir();
  std::filesystem::create_directories(data + "/redis");
  std::ofstream(data + "/redis/redis.sock") << "left by a crash";  // a stale socket path is cleaned up
  const auto port = free_port();
  const std::vector<std::string> argv{STARGAZER_BINARY, "--role=standalone", "--http-port=" + std::to_string(port),
                                      "--data-dir=" + data};
  std::string instance_id;
  {
    child_process standalone(argv);
    REQUIRE(wait_ready(port));
    REQUIRE(wait_until([&] { return standalone.output().find("Model:") != std::string::npos; }, 5s));
    const auto out = standalone.output();
    INFO(out);
    CHECK(out.find("Web chat:  http://127.0.0.1:" + std::to_string(port) + "/") != std::string::npos);
    CHECK(out.find("the offline echo model answers") != std::string::npos);
    const auto key = word_after(out, "Admin key: ");
    REQUIRE(key.rfind("sga_", 0) == 0);
    CHECK(out.find("(created now") != std::string::npos);
    auto created = http_request(port, "POST", "/redis-platform/instances", R"({"instance_id":"kept"})",
                                "Authorization: Bearer " + key + "\r\nContent-Type: application/json\r\n");
    CHECK(created.status == 201);
    standalone.signal(SIGTERM);
    CHECK(standalone.wait(10s) == 0);
  }
  CHECK_FALSE(std::filesystem::exists(data + "/redis/redis.sock"));  // the private server stopped with it
  CHECK(std::filesystem::exists(data + "/redis/appendonlydir"));
  {
    child_process again(argv);
    REQUIRE(wait_ready(port));
    REQUIRE(wait_until([&] { return again.output().find("Model:") != std::string::npos; }, 5s));
    const auto out = again.output();
    CHECK(out.find("Admin key: in " + data) != std::string::npos);  // not printed twice
    std::ifstream key_file(data + "/admin.key");
    std::string key;
    std::getline(key_file, key);
    auto listed = http_request(port, "GET", "/redis-platform/instances", "", "Authorization: Bearer " + key + "\r\n");
    CHECK(listed.status == 200);
    CHECK(listed.body.find("\"kept\"") != std::string::npos);  // the AOF brought it back
    again.signal(SIGTERM);
    CHECK(again.wait(10s) == 0);
  }
  std::filesystem::remove_all(data);
}

TEST_CASE("standalone without redis-server installed says how to install it", "[process][standalone]") {
  const auto data = make_temp_dir();
  auto [status, out] = run_process({STARGAZER_BINARY, "--role=standalone", "--data-dir=" + data}, {"PATH=/nonexistent"});
  CHECK(status == 1);
  CHECK(out.find("apt-get install redis-server") != std::string::npos);
  std::filesystem::remove_all(data);
}

TEST_CASE("a gateway SIGKILLed after posting a reply and before acknowledging it does not post it again",
          "[process][e2e][failpoint]") {
  // Issue 17, chaos finding 7: on the platforms Stargazer owns, the delivery marker is
  // written in the same MULTI as the reply, so the window between them does not exist.
  redis_server redis;
  const auto port = free_port();
  const std::vector<std::string> argv{STARGAZER_BINARY, "--role=gateway", "--http-port=" + std::to_string(port),
                                      "--redis-url=" + redis.url(), "--node-id=gw"};
  const auto gateway_with = [&](const std::string& failpoints) {
    std::vector<std::string> env{"SG_ADMIN_API_KEY=admin-key"};
    if (!failpoints.empty()) env.push_back("SG_FAILPOINTS=" + failpoints);
    return std::make_unique<child_process>(argv, env);
  };
  auto gateway = gateway_with("outbound.delivered=kill@1");
  child_process worker({STARGAZER_BINARY, "--role=worker", "--redis-url=" + redis.url(), "--node-id=worker-1"});
  REQUIRE(wait_ready(port));
  const std::string admin = "Authorization: Bearer admin-key\r\n";
  REQUIRE(http_request(port, "POST", "/redis-platform/instances", R"({"instance_id":"i1"})", admin).status == 201);
  const auto sent = http_request(port, "POST", "/redis-platform/instances/i1/messages",
                                 R"({"text":"only once","user_id":"u1","user_name":"Ada"})", admin);
  REQUIRE(sent.status == 202);
  // The reply is posted, then the failpoint kills the gateway before the entry is acknowledged.
  REQUIRE(gateway->wait(20s) == 128 + SIGKILL);
  const auto count_events = [&](const std::string& type) {
    const auto all = redis.cli({"XRANGE", "redis_platform:events:i1", "-", "+"});
    std::size_t n = 0;
    for (auto at = all.find("\"type\":\"" + type + "\""); at != std::string::npos;
         at = all.find("\"type\":\"" + type + "\"", at + 1))
      ++n;
    return n;
  };
  CHECK(count_events("message") == 1);

  // Restarted, it takes the entry back, finds the marker and only signals the end of the turn.
  gateway = gateway_with("");
  REQUIRE(wait_ready(port));
  REQUIRE(wait_until([&] { return count_events("turn_complete") >= 1; }, 20s));
  CHECK(wait_until([&] { return redis.cli({"XPENDING", "sg:stream:outbound:redis", "sg:gateway:redis"}).rfind("0", 0) == 0; }, 20s));
  CHECK(count_events("message") == 1);
  worker.signal(SIGTERM);
  gateway->signal(SIGTERM);
  CHECK(worker.wait(5s) == 0);
  CHECK(gateway->wait(5s) == 0);
}

TEST_CASE("deleting every instance after a mixed workload leaves nothing of theirs in Redis", "[process][e2e]") {
  redis_server redis;
  const auto port = free_port();
  child_process standalone({STARGAZER_BINARY, "--role=standalone", "--http-port=" + std::to_string(port),
                            "--redis-url=" + redis.url(), "--http-max-connections-per-ip=0"},
                           {"SG_ADMIN_API_KEY=admin-key"});
  REQUIRE(wait_ready(port));
  const std::string admin_header = "Authorization: Bearer admin-key\r\n";
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto created = http_request(port, "POST", "/redis-platform/instances", "{}", admin_header);
    REQUIRE(created.status == 201);
    auto d = json_of(created);
    const std::string id = d["instance_id"].GetString(), key = d["api_key"].GetString();
    ids.push_back(id);
    const auto base = "/redis-platform/instances/" + id;
    CHECK(http_request(port, "POST", base + "/users", R"({"user_id":"u1","display_name":"Ada"})", bearer(key)).status ==
          201);
    for (int m = 0; m < 3; ++m) {
      const auto headers = bearer(key) + "Idempotency-Key: k" + std::to_string(m) + "\r\n";
      auto r = http_request(port, "POST", base + "/messages?wait=true&timeout=20",
                            R"({"text":"message )" + std::to_string(m) + R"(","user_id":"u1","user_name":"Ada"})",
                            headers);
      CHECK(r.status == 200);
    }
    CHECK(http_request(port, "POST", base + "/messages?wait=true&timeout=20",
                       R"({"text":"!forget","user_id":"u1","user_name":"Ada"})", bearer(key))
              .status == 200);
    CHECK(http_request(port, "GET", base + "/messages", "", bearer(key)).status == 200);
  }
  for (const auto& id : ids)
    CHECK(http_request(port, "DELETE", "/redis-platform/instances/" + id, "", admin_header).status == 200);

  // What remains may not name a deleted instance; everything else is the process-wide set
  // docs/protocol.md lists (streams capped by MAXLEN, their groups' bookkeeping, leases).
  std::vector<std::string> leftovers;
  std::istringstream keys(redis.cli({"--scan"}));
  for (std::string key; std::getline(keys, key);)
    for (const auto& id : ids)
      if (key.find(id) != std::string::npos) leftovers.push_back(key + " (ttl " + redis.cli({"TTL", key}) + ")");
  std::string listing;
  for (const auto& k : leftovers) listing += k + "\n";
  INFO(listing);
  CHECK(leftovers.empty());
  standalone.signal(SIGTERM);
  CHECK(standalone.wait(5s) == 0);
}
