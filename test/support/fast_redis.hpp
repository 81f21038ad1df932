#pragma once
// Client settings for tests: reconnect and time out fast so failures show in milliseconds.

#include "stargazer/redis/connection.hpp"

#include <chrono>
#include <string>

namespace stargazer::test {

inline redis::connection_settings fast_redis_settings(const std::string& url) {
  using namespace std::chrono_literals;
  auto s = redis::settings_from_url(url);
  s.reconnect_min = 20ms;
  s.reconnect_max = 200ms;
  s.connect_timeout = 1000ms;
  s.command_timeout = 2000ms;
  return s;
}

}  // namespace stargazer::test
