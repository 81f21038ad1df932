// In-process micro benchmarks of hot paths.

#include "bench.hpp"

#include "stargazer/core/metrics.hpp"
#include "stargazer/http/router.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <chrono>

namespace stargazer::bench {

using clock_type = std::chrono::steady_clock;

int router(const args& a) {
  const long iterations = std::stol(option(a, "--iterations", "1000000"));
  using namespace stargazer::http;
  http::router rt;
  for (const char* p : {"/healthz", "/readyz", "/metrics", "/redis-platform/instances", "/redis-platform/instances/{instance_id}",
                        "/redis-platform/instances/{instance_id}/users", "/redis-platform/instances/{instance_id}/users/{user_id}",
                        "/redis-platform/instances/{instance_id}/messages"})
    rt.add(method::get, p, sync_handler([](request&) { return response::json(200, "{}"); }));
  boost::asio::io_context io;
  long ok = 0;
  const auto start = clock_type::now();
  boost::asio::co_spawn(io, [&]() -> boost::asio::awaitable<void> {
    for (long i = 0; i < iterations; ++i) {
      request req;
      req.verb = method::get;
      req.path = "/redis-platform/instances/inst-42/users/user-7";
      auto res = co_await rt.dispatch(req);
      ok += res.status == 200;
    }
  }, boost::asio::detached);
  io.run();
  const double secs = std::chrono::duration<double>(clock_type::now() - start).count();
  fmt::print("router: {} dispatches in {:.3f} s = {:.0f} ns/dispatch ({} ok)\n", iterations, secs,
             secs * 1e9 / static_cast<double>(iterations), ok);
  return 0;
}

int metrics(const args& a) {
  const long iterations = std::stol(option(a, "--iterations", "10000000"));
  stargazer::metrics::registry r;
  auto& h = r.make_histogram("lat", "Latency");
  auto& c = r.make_counter("n", "Count");
  const auto start = clock_type::now();
  for (long i = 0; i < iterations; ++i) {
    h.observe(static_cast<double>(i % 1000) * 1e-5);
    c.inc();
  }
  const double secs = std::chrono::duration<double>(clock_type::now() - start).count();
  fmt::print("metrics: {} observe+inc in {:.3f} s = {:.1f} ns/op\n", iterations, secs,
             secs * 1e9 / static_cast<double>(iterations));
  return 0;
}

}  // namespace stargazer::bench
