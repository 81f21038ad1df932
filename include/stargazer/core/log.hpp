#pragma once
// Structured logging: a human format for terminals and JSON lines for machines.
// The sink is process-wide (configured once at startup by the role); each component
// holds a `logger` naming itself. Thread-safe: one line is written with one call.

#include <fmt/format.h>

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

namespace stargazer::log {

enum class level { trace, debug, info, warn, error, off };
enum class format { text, json };

std::optional<level> parse_level(std::string_view name);
std::optional<format> parse_format(std::string_view name);
std::string_view to_string(level l);

// Configure the sink; safe to call again (e.g. on config reload).
void configure(level min_level, format fmt);
bool enabled(level l);

// A structured field such as {"trace_id", "..."}; values are written as JSON strings.
struct field {
  std::string_view key;
  std::string value;
};

void write(level l, std::string_view component, std::string_view message,
           std::initializer_list<field> fields = {});

class logger {
public:
  explicit logger(std::string component) : component_(std::move(component)) {}

  const std::string& component() const { return component_; }

  template <class... Args>
  void log(level l, std::initializer_list<field> fields, fmt::format_string<Args...> f,
           Args&&... args) const {
    if (enabled(l)) write(l, component_, fmt::format(f, std::forward<Args>(args)...), fields);
  }

  template <class... Args>
  void trace(fmt::format_string<Args...> f, Args&&... args) const {
    log(level::trace, {}, f, std::forward<Args>(args)...);
  }
  template <class... Args>
  void debug(fmt::format_string<Args...> f, Args&&... args) const {
    log(level::debug, {}, f, std::forward<Args>(args)...);
  }
  template <class... Args>
  void info(fmt::format_string<Args...> f, Args&&... args) const {
    log(level::info, {}, f, std::forward<Args>(args)...);
  }
  template <class... Args>
  void warn(fmt::format_string<Args...> f, Args&&... args) const {
    log(level::warn, {}, f, std::forward<Args>(args)...);
  }
  template <class... Args>
  void error(fmt::format_string<Args...> f, Args&&... args) const {
    log(level::error, {}, f, std::forward<Args>(args)...);
  }

private:
  std::string component_;
};

}  // namespace stargazer::log
