#include "stargazer/core/spawn.hpp"

#include "stargazer/core/log.hpp"

#include <atomic>
#include <exception>

namespace stargazer {

namespace {

std::atomic<std::uint64_t> failures{0};

}  // namespace

void spawn_exit::operator()(std::exception_ptr e) const {
  if (!e) return;
  failures.fetch_add(1, std::memory_order_relaxed);
  const log::logger log(component);
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log.error("coroutine ended with an exception: {}", ex.what());
  } catch (...) {
    log.error("coroutine ended with an exception that is not a std::exception");
  }
}

std::uint64_t coroutine_failures() { return failures.load(std::memory_order_relaxed); }

metrics::callback_handle expose_coroutine_failures(metrics::registry& registry) {
  return registry.make_gauge_callback("stargazer_coroutine_failures",
                                      "Component coroutines that ended with an exception since the process started",
                                      {}, [] { return static_cast<double>(coroutine_failures()); });
}

}  // namespace stargazer
