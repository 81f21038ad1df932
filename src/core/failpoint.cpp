#include "stargazer/core/failpoint.hpp"

#ifdef STARGAZER_FAILPOINTS
#include "stargazer/core/log.hpp"

#include <signal.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#endif

namespace stargazer {

#ifdef STARGAZER_FAILPOINTS
namespace {

struct armed_failpoint {
  long kill_at = 1;  // the hit that kills
  long hits = 0;
};

std::string_view trimmed(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

struct failpoint_table {
  std::mutex mutex;
  std::map<std::string, armed_failpoint, std::less<>> armed;
};

// SG_FAILPOINTS, parsed once: entries the process cannot read are reported and ignored.
failpoint_table& table() {
  static failpoint_table* instance = [] {
    auto* t = new failpoint_table;  // never destroyed: failpoints may fire during exit
    const char* spec = std::getenv("SG_FAILPOINTS");
    if (spec == nullptr) return t;
    const log::logger log("failpoint");
    std::string_view rest(spec);
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      const auto item = trimmed(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      if (item.empty()) continue;
      const auto eq = item.find('=');
      const auto name = trimmed(item.substr(0, eq));
      const auto action = eq == std::string_view::npos ? std::string_view("kill") : trimmed(item.substr(eq + 1));
      armed_failpoint point;
      const auto at = action.find('@');
      if (action.substr(0, at) != "kill") {
        log.error("SG_FAILPOINTS: '{}' is not name=kill[@n]; ignored", item);
        continue;
      }
      if (at != std::string_view::npos) {
        const auto n = action.substr(at + 1);
        const auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), point.kill_at);
        if (ec != std::errc() || end != n.data() + n.size() || point.kill_at < 1) {
          log.error("SG_FAILPOINTS: '{}' has no hit count n >= 1 after '@'; ignored", item);
          continue;
        }
      }
      log.warn("armed: {} kills this process at hit {}", name, point.kill_at);
      t->armed.emplace(std::string(name), point);
    }
    return t;
  }();
  return *instance;
}

}  // namespace

void failpoint(std::string_view name) {
  auto& t = table();
  if (t.armed.empty()) return;  // filled once, before any hit, and never changed after
  const std::lock_guard lock(t.mutex);
  const auto it = t.armed.find(name);
  if (it == t.armed.end() || ++it->second.hits != it->second.kill_at) return;
  log::logger("failpoint").warn("{}: hit {}, killing this process", name, it->second.hits);
  ::kill(::getpid(), SIGKILL);
}
#else
void failpoint(std::string_view) {}
#endif

}  // namespace stargazer
