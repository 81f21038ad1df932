#pragma once
// Starting a component's background coroutine (a read loop, a sweep, a renewal) without
// losing it silently: an exception that escapes it is logged with the component's name
// and counted, /metrics shows the count (stargazer_coroutine_failures).

#include "stargazer/core/metrics.hpp"

#include <utility>  // before Asio: 1.18's awaitable.hpp uses std::exchange
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>

#include <exception>

#include <cstdint>
#include <type_traits>
#include <string>

namespace stargazer {

// What runs when a spawned coroutine ends: logs and counts an escaping exception.
struct spawn_exit {
  std::string component;
  void operator()(std::exception_ptr e) const;
};

// Runs `task` on `ex`, detached from the caller.
inline void spawn(const boost::asio::any_io_executor& ex, boost::asio::awaitable<void> task, std::string component) {
  boost::asio::co_spawn(ex, std::move(task), spawn_exit{std::move(component)});
}

// Runs the coroutine function `fn` (a lambda returning awaitable<void>) on `ex`. Its
// captures live in the coroutine frame: never spawn `[captures]() -> awaitable {...}()`,
// whose lambda dies before the coroutine runs.
template <class Function>
  requires std::is_invocable_r_v<boost::asio::awaitable<void>, Function>
void spawn(const boost::asio::any_io_executor& ex, Function&& fn, std::string component) {
  boost::asio::co_spawn(ex, std::forward<Function>(fn), spawn_exit{std::move(component)});
}

// Coroutines started by spawn() that ended with an exception, in this process.
std::uint64_t coroutine_failures();

// Shows coroutine_failures() in `registry` while the handle lives.
[[nodiscard]] metrics::callback_handle expose_coroutine_failures(metrics::registry& registry);

}  // namespace stargazer
