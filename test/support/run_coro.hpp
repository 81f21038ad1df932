#pragma once
// Runs a coroutine on an io_context until it finishes, failing the test (instead of
// hanging the suite) when it takes longer than `timeout`.

#include <boost/asio.hpp>
#include <catch2/catch.hpp>

#include <chrono>
#include <exception>
#include <functional>
#include <optional>

namespace stargazer::test {

template <class T>
T run_coro(boost::asio::io_context& io, boost::asio::awaitable<T> coro,
           std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  bool done = false;
  std::exception_ptr error;
  std::optional<T> result;
  // The value is stored by a wrapper, so T need not be default-constructible (result<T>).
  auto store = [](boost::asio::awaitable<T> c, std::optional<T>& out) -> boost::asio::awaitable<void> {
    out.emplace(co_await std::move(c));
  };
  boost::asio::co_spawn(io, store(std::move(coro), result), [&](std::exception_ptr e) {
    done = true;
    error = e;
  });
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!done && std::chrono::steady_clock::now() < until) {
    if (io.stopped()) io.restart();
    io.run_one_for(until - std::chrono::steady_clock::now());
  }
  if (!done) FAIL("coroutine did not finish within " << timeout.count() << " ms");
  if (error) std::rethrow_exception(error);
  return std::move(*result);
}

inline void run_coro(boost::asio::io_context& io, boost::asio::awaitable<void> coro,
                     std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  run_coro(io, [](boost::asio::awaitable<void> c) -> boost::asio::awaitable<bool> {
    co_await std::move(c);
    co_return true;
  }(std::move(coro)), timeout);
}

// A timer sleep inside a test coroutine.
inline boost::asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  boost::asio::steady_timer t(co_await boost::asio::this_coro::executor, d);
  co_await t.async_wait(boost::asio::use_awaitable);
}

// Polls `done` every 5 ms for up to `timeout`; whether it came true.
inline boost::asio::awaitable<bool> eventually(std::function<bool()> done,
                                               std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) co_return false;
    co_await sleep_for(std::chrono::milliseconds(5));
  }
  co_return true;
}

}  // namespace stargazer::test
