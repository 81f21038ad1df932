#pragma once
// Service lifecycle: components start in dependency
// order, the process runs until SIGINT/SIGTERM, then components stop in reverse order,
// draining in-flight work up to a deadline. A second signal exits at once (status 130).

#include <utility>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace stargazer {

// A started component. stop() must return within `deadline` (roughly) and leave no
// coroutine of the component touching freed state.
class component {
public:
  virtual ~component() = default;
  virtual std::string_view name() const = 0;
  virtual boost::asio::awaitable<void> start() = 0;
  virtual boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline) = 0;
};

struct readiness {
  bool ready = false;
  std::string detail;
};

// Components report whether they can serve; /readyz is ready when all are.
class health_registry {
public:
  void add(std::string name, std::function<readiness()> check);
  struct result {
    bool ready = true;
    std::vector<std::pair<std::string, readiness>> checks;
  };
  result check() const;
  // {"ready": bool, "checks": {"name": {"ready": bool, "detail": "..."}}}
  std::string to_json(const result& r) const;

private:
  mutable std::mutex mutex_;
  std::vector<std::pair<std::string, std::function<readiness()>>> checks_;
};

class service_host {
public:
  service_host(boost::asio::io_context& io, std::chrono::milliseconds shutdown_deadline);

  // Components start in the order added and stop in reverse.
  void add(std::shared_ptr<component> c);

  // Starts everything, waits for a signal (or request_stop), stops everything, and
  // returns the process exit status: 0 on a clean stop, 1 when a start failed.
  int run();

  // Asks for a graceful stop as a signal would (thread-safe).
  void request_stop();

private:
  boost::asio::awaitable<int> lifecycle();

  boost::asio::io_context& io_;
  std::chrono::milliseconds deadline_;
  std::vector<std::shared_ptr<component>> components_;
  std::function<void()> stop_requested_;
};

}  // namespace stargazer
