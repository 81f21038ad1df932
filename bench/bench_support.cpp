#include "bench_support.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>

namespace stargazer::bench {

boost::asio::awaitable<bool> wait_for_count(const std::function<std::size_t()>& count, std::size_t total,
                                            std::chrono::steady_clock::duration stall) {
  std::size_t seen = 0;
  auto last_progress = std::chrono::steady_clock::now();
  while (count() < total) {
    co_await sleep_for(std::chrono::milliseconds(5));
    if (const auto now_count = count(); now_count != seen) {
      seen = now_count;
      last_progress = std::chrono::steady_clock::now();
    } else if (std::chrono::steady_clock::now() - last_progress > stall) {
      co_return false;
    }
  }
  co_return true;
}

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

server_counters parse_info(const std::string& text) {
  server_counters s;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.starts_with("cmdstat_")) {
      const auto colon = line.find(':');
      const auto calls = line.find("calls=", colon);
      if (colon == std::string::npos || calls == std::string::npos) continue;
      std::uint64_t n = 0;
      std::from_chars(line.data() + calls + 6, line.data() + line.size(), n);
      s.calls[line.substr(8, colon - 8)] = n;
      if (const auto us = line.find("usec=", colon); us != std::string::npos) {
        std::uint64_t u = 0;
        std::from_chars(line.data() + us + 5, line.data() + line.size(), u);
        s.usec[line.substr(8, colon - 8)] = u;
      }
    } else if (line.starts_with("used_cpu_user:") || line.starts_with("used_cpu_sys:")) {
      s.cpu_seconds += std::stod(line.substr(line.find(':') + 1));
    }
  }
  return s;
}

boost::asio::awaitable<server_counters> read_counters(redis::connection& conn) {
  auto r = co_await conn.command("INFO", "commandstats", "cpu");
  if (!r || !r->is_bulk()) throw std::runtime_error("INFO failed");
  co_return parse_info(r->str());
}

double self_cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  const auto secs = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6;
  };
  return secs(ru.ru_utime) + secs(ru.ru_stime);
}

process_usage usage_of(pid_t pid) {
  process_usage u;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  const std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces) start after the last ')'.
  if (const auto close = text.rfind(')'); close != std::string::npos) {
    std::istringstream fields(text.substr(close + 2));
    std::string field;
    double utime = 0, stime = 0;
    for (int i = 3; fields >> field; ++i) {
      if (i == 14) utime = std::stod(field);
      if (i == 15) {
        stime = std::stod(field);
        break;
      }
    }
    u.cpu_seconds = (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("VmRSS:")) u.rss_mb = std::stod(line.substr(6)) / 1024.0;
    if (line.starts_with("VmHWM:")) u.peak_rss_mb = std::stod(line.substr(6)) / 1024.0;
  }
  return u;
}

}  // namespace stargazer::bench
