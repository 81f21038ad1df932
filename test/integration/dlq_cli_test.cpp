// `stargazer dlq list|replay|purge` against a real redis-server, run as the real binary.
// Dead letters are written with redis-cli in the format of docs/protocol.md §4.4.

#include "child_process.hpp"
#include "redis_server.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

using namespace stargazer::test;

namespace {

using fields = std::vector<std::pair<std::string, std::string>>;

struct dead_letter_spec {
  std::string stream = "sg:stream:inbound";
  fields original;
  std::string original_id = "1700000000000-0";
  std::string reason = "decode_error: bad msgpack";
  std::string attempts = "0";
  std::string consumer = "worker-a";
  std::string ts = "1700000000123";
};

// XADDs a dead letter as the stream consumer writes it and returns its DLQ id.
std::string dead_letter(const redis_server& redis, const dead_letter_spec& spec) {
  std::vector<std::string> args{"XADD", spec.stream + ":dlq", "*"};
  for (const auto& [k, v] : spec.original) {
    args.push_back(k);
    args.push_back(v);
  }
  const fields dlq{{"dlq_reason", spec.reason},  {"dlq_attempts", spec.attempts}, {"dlq_consumer", spec.consumer},
                   {"dlq_group", "sg:workers"},  {"dlq_stream", spec.stream},     {"dlq_id", spec.original_id},
                   {"dlq_ts", spec.ts}};
  for (const auto& [k, v] : dlq) {
    args.push_back(k);
    args.push_back(v);
  }
  return redis.cli(args);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

std::pair<int, std::string> dlq(const redis_server& redis, std::vector<std::string> args,
                                std::vector<std::string> env = {}) {
  std::vector<std::string> argv{STARGAZER_BINARY, "dlq"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--redis-url");
  argv.push_back(redis.url());
  return run_process(argv, std::move(env));
}

}  // namespace

TEST_CASE("dlq list prints one line per dead letter of the inbound stream", "[dlq]") {
  redis_server redis;
  const auto first = dead_letter(redis, {.original = {{"data", "hello"}, {"trace_id", "trace-1"}}});
  const auto second = dead_letter(redis, {.original = {{"data", "again"}},
                                          .original_id = "1700000000001-0",
                                          .reason = "max_attempts_exceeded: 4",
                                          .attempts = "3",
                                          .consumer = "worker-b",
                                          .ts = "1700000060000"});
  REQUIRE(first.find('-') != std::string::npos);

  SECTION("text") {
    auto [status, out] = dlq(redis, {"list"});
    INFO(out);
    CHECK(status == 0);
    const auto lines = lines_of(out);
    REQUIRE(lines.size() == 2);
    CHECK(lines[0] == first +
                          " original=1700000000000-0 reason=\"decode_error: bad msgpack\" attempts=0 "
                          "consumer=worker-a trace_id=trace-1 time=2023-11-14T22:13:20.123Z");
    CHECK(lines[1] == second +
                          " original=1700000000001-0 reason=\"max_attempts_exceeded: 4\" attempts=3 "
                          "consumer=worker-b time=2023-11-14T22:14:20.000Z");
  }

  SECTION("--count limits the listing and says how many there are") {
    auto [status, out] = dlq(redis, {"list", "--count", "1"});
    INFO(out);
    CHECK(status == 0);
    CHECK(out.find(first + " original=") != std::string::npos);
    CHECK(out.find(second) == std::string::npos);
    CHECK(out.find("1 of 2 entries in sg:stream:inbound:dlq") != std::string::npos);
  }

  SECTION("--json") {
    auto [status, out] = dlq(redis, {"list", "--json"});
    INFO(out);
    CHECK(status == 0);
    const auto lines = lines_of(out);
    REQUIRE(lines.size() == 2);
    CHECK(lines[0] == "{\"id\":\"" + first +
                          "\",\"original_id\":\"1700000000000-0\",\"reason\":\"decode_error: bad msgpack\","
                          "\"attempts\":0,\"consumer\":\"worker-a\",\"group\":\"sg:workers\","
                          "\"stream\":\"sg:stream:inbound\",\"trace_id\":\"trace-1\",\"dlq_ts\":1700000000123,"
                          "\"time\":\"2023-11-14T22:13:20.123Z\",\"fields\":[\"data\",\"trace_id\"]}");
    CHECK(lines[1].find("\"attempts\":3,") != std::string::npos);
    CHECK(lines[1].find("trace_id") == std::string::npos);
  }

  SECTION("another stream, named by --stream or SG_INBOUND_STREAM") {
    dead_letter(redis, {.stream = "custom:in", .original = {{"data", "x"}}, .original_id = "5-0"});
    auto [status, out] = dlq(redis, {"list", "--stream", "custom:in"});
    CHECK(status == 0);
    CHECK(lines_of(out).size() == 1);
    CHECK(out.find("original=5-0") != std::string::npos);

    auto [status2, out2] = dlq(redis, {"list"}, {"SG_INBOUND_STREAM=custom:in"});
    CHECK(status2 == 0);
    CHECK(out2.find("original=5-0") != std::string::npos);

    auto [status3, out3] = dlq(redis, {"list", "--stream", "nothing:here"});
    CHECK(status3 == 0);
    CHECK(out3.find("nothing:here:dlq is empty") != std::string::npos);
  }
}

TEST_CASE("dlq replay puts the original fields back on the stream and removes the dead letter", "[dlq]") {
  redis_server redis;
  const std::string stream = "sg:stream:tools";
  const auto a = dead_letter(redis, {.stream = stream,
                                     .original = {{"data", "payload a"}, {"trace_id", "t-a"}, {"okey", "web:1"}},
                                     .original_id = "10-0"});
  const auto b = dead_letter(redis, {.stream = stream, .original = {{"data", "payload b"}}, .original_id = "11-0"});
  const auto c = dead_letter(redis, {.stream = stream, .original = {{"data", "payload c"}}, .original_id = "12-0"});

  // An unknown id changes nothing, even next to a known one.
  auto [status0, out0] = dlq(redis, {"replay", "--stream", stream, "--id", a, "1-1"});
  INFO(out0);
  CHECK(status0 == 1);
  CHECK(lines_of(out0).size() == 1);
  CHECK(out0.find("no entry 1-1 in sg:stream:tools:dlq") != std::string::npos);
  CHECK(redis.cli({"XLEN", stream + ":dlq"}) == "3");
  CHECK(redis.cli({"EXISTS", stream}) == "0");

  auto [status, out] = dlq(redis, {"replay", "--stream", stream, "--id", a});
  INFO(out);
  CHECK(status == 0);
  CHECK(out.find("replayed 1 entry") != std::string::npos);
  // Back on the stream with exactly its original fields, in order; gone from the DLQ.
  const auto replayed = lines_of(redis.cli({"XRANGE", stream, "-", "+"}));
  REQUIRE(replayed.size() == 7);
  CHECK(std::vector<std::string>(replayed.begin() + 1, replayed.end()) ==
        std::vector<std::string>{"data", "payload a", "trace_id", "t-a", "okey", "web:1"});
  CHECK(redis.cli({"XRANGE", stream + ":dlq", a, a}).empty());
  CHECK(redis.cli({"XLEN", stream + ":dlq"}) == "2");

  auto [status2, out2] = dlq(redis, {"replay", "--stream", stream, "--all"});
  INFO(out2);
  CHECK(status2 == 0);
  CHECK(out2.find("replayed 2 entries") != std::string::npos);
  CHECK(redis.cli({"XLEN", stream}) == "3");
  CHECK(redis.cli({"XLEN", stream + ":dlq"}) == "0");
  const auto all = redis.cli({"XRANGE", stream, "-", "+"});
  CHECK(all.find("payload b") != std::string::npos);
  CHECK(all.find("payload c") != std::string::npos);
  CHECK(all.find("dlq_") == std::string::npos);
  (void)b;
  (void)c;
}

TEST_CASE("dlq replay refuses a stream key of another type and keeps the dead letter", "[dlq]") {
  redis_server redis;
  const auto a = dead_letter(redis, {.stream = "odd", .original = {{"data", "x"}}});
  redis.cli({"SET", "odd", "not a stream"});
  auto [status, out] = dlq(redis, {"replay", "--stream", "odd", "--id", a});
  INFO(out);
  CHECK(status == 1);
  CHECK(out.find("not a stream") != std::string::npos);
  CHECK(redis.cli({"XLEN", "odd:dlq"}) == "1");
}

TEST_CASE("dlq purge deletes chosen entries or the whole dead-letter stream", "[dlq]") {
  redis_server redis;
  const auto a = dead_letter(redis, {.original = {{"data", "a"}}});
  dead_letter(redis, {.original = {{"data", "b"}}});
  dead_letter(redis, {.original = {{"data", "c"}}});

  auto [status0, out0] = dlq(redis, {"purge", "--id", "99-0"});
  CHECK(status0 == 1);
  CHECK(out0.find("no entry 99-0") != std::string::npos);
  CHECK(redis.cli({"XLEN", "sg:stream:inbound:dlq"}) == "3");

  auto [status, out] = dlq(redis, {"purge", "--id", a});
  INFO(out);
  CHECK(status == 0);
  CHECK(out.find("purged 1 entry from sg:stream:inbound:dlq") != std::string::npos);
  CHECK(redis.cli({"XLEN", "sg:stream:inbound:dlq"}) == "2");
  CHECK(redis.cli({"EXISTS", "sg:stream:inbound"}) == "0");  // purge never replays

  auto [status2, out2] = dlq(redis, {"purge", "--all"});
  INFO(out2);
  CHECK(status2 == 0);
  CHECK(out2.find("purged 2 entries") != std::string::npos);
  CHECK(redis.cli({"EXISTS", "sg:stream:inbound:dlq"}) == "0");
}

TEST_CASE("dlq with unreachable Redis prints one line and exits 1", "[dlq]") {
  const auto port = free_port();  // nothing listens there
  const auto started = std::chrono::steady_clock::now();
  auto [status, out] =
      run_process({STARGAZER_BINARY, "dlq", "list", "--redis-url", "redis://127.0.0.1:" + std::to_string(port)});
  INFO(out);
  CHECK(status == 1);
  CHECK(lines_of(out).size() == 1);
  CHECK(out.find("cannot reach Redis at redis://127.0.0.1:" + std::to_string(port)) != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(8));
}

TEST_CASE("dlq usage errors exit 2", "[dlq]") {
  const std::vector<std::vector<std::string>> bad{
      {"dlq"},
      {"dlq", "replay"},
      {"dlq", "purge"},
      {"dlq", "purge", "--id", "1-0", "--all"},
      {"dlq", "replay", "--id", "not-an-id"},
      {"dlq", "replay", "--id", "1700000000000"},
      {"dlq", "list", "--count", "0"},
      {"dlq", "list", "--frobnicate"},
  };
  for (const auto& args : bad) {
    std::vector<std::string> argv{STARGAZER_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    auto [status, out] = run_process(argv);
    INFO(args.back() << ": " << out);
    CHECK(status == 2);
    CHECK(out.find("error") != std::string::npos);
  }
}
