#pragma once
// Helpers shared by the benchmarks that drive Redis: timing, percentiles, redis-server's
// own counters, and the CPU and memory of a process.

#include "stargazer/redis/connection.hpp"

#include <utility>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace stargazer::bench {

inline boost::asio::awaitable<void> sleep_for(std::chrono::steady_clock::duration d) {
  boost::asio::steady_timer t(co_await boost::asio::this_coro::executor, d);
  boost::system::error_code ec;
  co_await t.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
}

// Waits until `count()` reaches `total`; false once it has not grown for `stall`.
boost::asio::awaitable<bool> wait_for_count(const std::function<std::size_t()>& count, std::size_t total,
                                            std::chrono::steady_clock::duration stall);

// The q-quantile (0..1) of an ascending vector, nearest rank; 0 when empty.
double percentile(const std::vector<double>& sorted, double q);

// INFO commandstats + cpu, parsed.
struct server_counters {
  std::map<std::string, std::uint64_t> calls;  // per command
  std::map<std::string, std::uint64_t> usec;   // per command (a script's includes its own calls)
  double cpu_seconds = 0;                      // used_cpu_user + used_cpu_sys
  std::uint64_t total() const {
    std::uint64_t n = 0;
    for (const auto& [name, c] : calls) n += c;
    return n;
  }
};
server_counters parse_info(const std::string& text);
boost::asio::awaitable<server_counters> read_counters(redis::connection& conn);

// CPU seconds (user + system) this process has used.
double self_cpu_seconds();

// Another process, from /proc: CPU seconds used, resident and peak resident memory (MB).
struct process_usage {
  double cpu_seconds = 0;
  double rss_mb = 0;
  double peak_rss_mb = 0;
};
process_usage usage_of(pid_t pid);

}  // namespace stargazer::bench
