// Commands/s of pipelined commands from many coroutines on ONE connection, next to
// redis-benchmark's figure for the same command against the same server with -P 16 -c 1.

#include "bench.hpp"

#include "stargazer/redis/connection.hpp"

#include "redis_server.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <memory>
#include <regex>

namespace stargazer::bench {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;

namespace {

std::string run_shell(const std::string& command) {
  std::string out;
  if (FILE* pipe = ::popen(command.c_str(), "r")) {
    char buf[4096];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
    ::pclose(pipe);
  }
  return out;
}

// redis-benchmark -q prints lines such as "SET: 412371.13 requests per second, p50=..."
double parse_rps(const std::string& text) {
  std::smatch m;
  static const std::regex number(R"(([0-9]+(\.[0-9]+)?) requests per second)");
  return std::regex_search(text, m, number) ? std::stod(m[1]) : 0.0;
}

}  // namespace

int redis(const args& a) {
  const auto command = option(a, "--command", "set");
  const int coroutines = std::stoi(option(a, "--coroutines", "64"));
  const double seconds = std::stod(option(a, "--seconds", "5"));
  std::string url = option(a, "--url", "");
  std::unique_ptr<test::redis_server> own;
  if (url.empty()) {
    own = std::make_unique<test::redis_server>();
    url = own->url();
  }
  const auto address = *redis::parse_url(url);

  asio::io_context io(1);
  redis::connection conn(io.get_executor(), redis::settings_from_url(url));
  conn.start();
  long done = 0, failed = 0;
  bool running = true;
  clock_type::time_point started;
  for (int c = 0; c < coroutines; ++c) {
    asio::co_spawn(io, [&, c]() -> asio::awaitable<void> {
      co_await conn.wait_connected(std::chrono::seconds(5));
      const std::string key = "bench:" + std::to_string(c);
      while (running) {
        redis::request req;
        if (command == "xadd") req.push("XADD", "bench:stream", "MAXLEN", "~", "100000", "*", "f", "v");
        else req.push("SET", key, "value");
        auto r = co_await conn.exec(std::move(req));
        if (r) ++done;
        else ++failed;
      }
    }, asio::detached);
  }
  asio::steady_timer warmup(io, std::chrono::milliseconds(500));
  long at_start = 0;
  warmup.async_wait([&](auto) {
    at_start = done;
    started = clock_type::now();
    auto stop_timer = std::make_shared<asio::steady_timer>(
        io, std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::duration<double>(seconds)));
    stop_timer->async_wait([&, stop_timer](auto) {
      running = false;
      const double secs = std::chrono::duration<double>(clock_type::now() - started).count();
      const double ours = static_cast<double>(done - at_start) / secs;
      fmt::print("stargazer: {} {:.0f} commands/s on one connection ({} coroutines, {:.1f} s, {} failed)\n",
                 command == "xadd" ? "XADD" : "SET", ours, coroutines, secs, failed);
      std::fflush(stdout);
      conn.stop();
      const auto redis_cmd = fmt::format(
          "redis-benchmark -h {} -p {} -P 16 -c 1 -n 1000000 -q {} 2>/dev/null", address.host, address.port,
          command == "xadd" ? "XADD bench:rb MAXLEN '~' 100000 '*' f v" : "-t set");
      const auto text = run_shell(redis_cmd);
      const double theirs = parse_rps(text);
      fmt::print("redis-benchmark -P 16 -c 1: {:.0f} requests/s\n", theirs);
      if (theirs > 0) fmt::print("ratio: {:.0f}%\n", 100.0 * ours / theirs);
    });
  });
  io.run();
  return 0;
}

}  // namespace stargazer::bench
