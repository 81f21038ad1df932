// The real-Redis fixture itself: starts, answers, restarts on the same port, dies when killed.

#include "redis_server.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <signal.h>

using namespace stargazer::test;

TEST_CASE("the fixture runs a real redis-server on a free port and a unix socket", "[fixture]") {
  redis_server redis;
  CHECK(redis.running());
  CHECK(redis.port() > 0);
  CHECK(redis.cli({"PING"}) == "PONG");
  CHECK(std::filesystem::exists(redis.unix_path()));
  CHECK(redis.cli({"SET", "k", "v w"}) == "OK");
  CHECK(redis.cli({"GET", "k"}) == "v w");
  CHECK(redis.url() == "redis://127.0.0.1:" + std::to_string(redis.port()));
}

TEST_CASE("the fixture restarts on the same port and stops by pid", "[fixture]") {
  redis_server redis;
  const auto port = redis.port();
  const auto pid = redis.pid();
  redis.kill();
  CHECK_FALSE(redis.running());
  CHECK(::kill(pid, 0) != 0);  // the process is gone
  CHECK(redis.cli({"PING"}).find("PONG") == std::string::npos);
  redis.start();
  CHECK(redis.port() == port);
  CHECK(redis.cli({"PING"}) == "PONG");
  redis.stop();
  CHECK_FALSE(redis.running());
}

TEST_CASE("two fixtures do not share state", "[fixture]") {
  redis_server a, b;
  CHECK(a.port() != b.port());
  a.cli({"SET", "only", "a"});
  CHECK(b.cli({"EXISTS", "only"}) == "0");
}

TEST_CASE("a missing redis-server binary is a clear error", "[fixture]") {
  redis_server_options options;
  options.executable = "redis-server-that-does-not-exist";
  CHECK_THROWS_WITH(redis_server(options), Catch::Contains("redis-server"));
}
