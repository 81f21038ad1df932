#pragma once
// Polls a condition from a test's thread: whether it held within `timeout`.

#include <chrono>
#include <functional>
#include <thread>

namespace stargazer::test {

inline bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout,
                       std::chrono::milliseconds every = std::chrono::milliseconds(20)) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(every);
  }
  return true;
}

}  // namespace stargazer::test
