// stargazer_bench: prints figures, asserts nothing. `stargazer_bench --help` lists benchmarks.

#include "stargazer/core/metrics.hpp"
#include "stargazer/http/router.hpp"

#include <boost/asio.hpp>
#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <string>

namespace {

using clock_type = std::chrono::steady_clock;

// Routing plus a synchronous handler, as the REST API's hot path sees it.
int bench_router(long iterations) {
  using namespace stargazer::http;
  router rt;
  for (const char* p : {"/healthz", "/readyz", "/metrics", "/redis-platform/instances", "/redis-platform/instances/{instance_id}",
                        "/redis-platform/instances/{instance_id}/users", "/redis-platform/instances/{instance_id}/users/{user_id}",
                        "/redis-platform/instances/{instance_id}/messages"})
    rt.add(method::get, p, sync_handler([](request&) { return response::json(200, "{}"); }));
  boost::asio::io_context io;
  long done = 0;
  const auto start = clock_type::now();
  boost::asio::co_spawn(io, [&]() -> boost::asio::awaitable<void> {
    for (long i = 0; i < iterations; ++i) {
      request req;
      req.verb = method::get;
      req.path = "/redis-platform/instances/inst-42/users/user-7";
      auto res = co_await rt.dispatch(req);
      done += res.status == 200;
    }
  }, boost::asio::detached);
  io.run();
  const double secs = std::chrono::duration<double>(clock_type::now() - start).count();
  fmt::print("router: {} dispatches in {:.3f} s = {:.0f} ns/dispatch ({} ok)\n", iterations, secs,
             secs * 1e9 / static_cast<double>(iterations), done);
  return 0;
}

int bench_metrics(long iterations) {
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

}  // namespace

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "--help";
  const long n = argc > 2 ? std::stol(argv[2]) : 1'000'000;
  if (which == "router") return bench_router(n);
  if (which == "metrics") return bench_metrics(n);
  fmt::print("usage: stargazer_bench <benchmark> [iterations]\n"
             "  router    route + dispatch a REST-shaped path\n"
             "  metrics   histogram observe + counter increment\n");
  return which == "--help" ? 0 : 2;
}
