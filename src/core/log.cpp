#include "stargazer/core/log.hpp"

#include "stargazer/core/json.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace stargazer::log {
namespace {

std::atomic<level> g_min_level{level::info};
std::atomic<format> g_format{format::text};
std::mutex g_write_mutex;

std::string timestamp_utc() {
  const auto now = std::chrono::system_clock::now();
  const auto secs = std::chrono::time_point_cast<std::chrono::seconds>(now);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now - secs).count();
  const std::time_t t = std::chrono::system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", buf, millis);
}

}  // namespace

std::optional<level> parse_level(std::string_view name) {
  if (name == "trace") return level::trace;
  if (name == "debug") return level::debug;
  if (name == "info") return level::info;
  if (name == "warn" || name == "warning") return level::warn;
  if (name == "error") return level::error;
  if (name == "off") return level::off;
  return std::nullopt;
}

std::optional<format> parse_format(std::string_view name) {
  if (name == "text") return format::text;
  if (name == "json") return format::json;
  return std::nullopt;
}

std::string_view to_string(level l) {
  switch (l) {
    case level::trace: return "trace";
    case level::debug: return "debug";
    case level::info: return "info";
    case level::warn: return "warn";
    case level::error: return "error";
    case level::off: return "off";
  }
  return "unknown";
}

void configure(level min_level, format fmt) {
  g_min_level.store(min_level, std::memory_order_relaxed);
  g_format.store(fmt, std::memory_order_relaxed);
}

bool enabled(level l) {
  return l != level::off && l >= g_min_level.load(std::memory_order_relaxed);
}

void write(level l, std::string_view component, std::string_view message,
           std::initializer_list<field> fields) {
  std::string line;
  if (g_format.load(std::memory_order_relaxed) == format::json) {
    line = "{\"ts\":";
    json::append_quoted(line, timestamp_utc());
    line += ",\"level\":";
    json::append_quoted(line, to_string(l));
    line += ",\"component\":";
    json::append_quoted(line, component);
    line += ",\"msg\":";
    json::append_quoted(line, message);
    for (const auto& f : fields) {
      line.push_back(',');
      json::append_quoted(line, f.key);
      line.push_back(':');
      json::append_quoted(line, f.value);
    }
    line += "}\n";
  } else {
    line = fmt::format("{} {:<5} [{}] {}", timestamp_utc(), to_string(l), component, message);
    for (const auto& f : fields) fmt::format_to(std::back_inserter(line), " {}={}", f.key, f.value);
    line.push_back('\n');
  }
  std::lock_guard lock(g_write_mutex);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace stargazer::log
