#include "stargazer/core/service.hpp"

#include "stargazer/core/json.hpp"
#include "stargazer/core/log.hpp"

#include <boost/asio.hpp>

#include <csignal>
#include <cstdlib>

namespace stargazer {

namespace asio = boost::asio;

void health_registry::add(std::string name, std::function<readiness()> check) {
  std::lock_guard lock(mutex_);
  checks_.emplace_back(std::move(name), std::move(check));
}

health_registry::result health_registry::check() const {
  std::lock_guard lock(mutex_);
  result r;
  for (const auto& [name, fn] : checks_) {
    auto state = fn();
    r.ready = r.ready && state.ready;
    r.checks.emplace_back(name, std::move(state));
  }
  return r;
}

std::string health_registry::to_json(const result& r) const {
  std::string out = r.ready ? "{\"ready\":true,\"checks\":{" : "{\"ready\":false,\"checks\":{";
  bool first = true;
  for (const auto& [name, state] : r.checks) {
    if (!first) out.push_back(',');
    first = false;
    json::append_quoted(out, name);
    out += state.ready ? ":{\"ready\":true,\"detail\":" : ":{\"ready\":false,\"detail\":";
    json::append_quoted(out, state.detail);
    out.push_back('}');
  }
  out += "}}";
  return out;
}

service_host::service_host(asio::io_context& io, std::chrono::milliseconds shutdown_deadline)
    : io_(io), deadline_(shutdown_deadline) {}

void service_host::add(std::shared_ptr<component> c) { components_.push_back(std::move(c)); }

void service_host::request_stop() {
  asio::post(io_, [this] {
    if (stop_requested_) stop_requested_();
  });
}

asio::awaitable<int> service_host::lifecycle() {
  const log::logger log("service");
  asio::signal_set signals(io_, SIGINT, SIGTERM);
  asio::steady_timer stop_signal(io_, asio::steady_timer::time_point::max());
  bool stopping = false;
  stop_requested_ = [&] {
    stopping = true;
    stop_signal.cancel();
  };

  // First signal: graceful stop. Second: immediate exit.
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int signo) {
        if (ec) return;
        if (stopping) {
          log.warn("second signal ({}); exiting now", signo);
          std::_Exit(130);
        }
        log.info("signal {} received; stopping (deadline {} ms)", signo, deadline_.count());
        stop_requested_();
        signals.async_wait(on_signal);
      };
  signals.async_wait(on_signal);

  std::size_t started = 0;
  int status = 0;
  for (const auto& c : components_) {
    if (stopping) break;
    try {
      co_await c->start();
      ++started;
      log.debug("started {}", c->name());
    } catch (const std::exception& e) {
      log.error("{} failed to start: {}", c->name(), e.what());
      status = 1;
      break;
    }
  }
  if (status == 0 && !stopping) {
    log.info("ready");
    boost::system::error_code ec;
    co_await stop_signal.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

  const auto until = std::chrono::steady_clock::now() + deadline_;
  for (std::size_t i = started; i-- > 0;) {
    const auto left = std::max(std::chrono::milliseconds(0),
                               std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()));
    try {
      co_await components_[i]->stop(left);
      log.debug("stopped {}", components_[i]->name());
    } catch (const std::exception& e) {
      log.error("{} failed to stop cleanly: {}", components_[i]->name(), e.what());
    }
  }
  stop_requested_ = nullptr;
  boost::system::error_code ignored;
  signals.cancel(ignored);
  co_return status;
}

int service_host::run() {
  int status = 1;
  asio::co_spawn(io_, lifecycle(), [&](std::exception_ptr e, int s) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log::logger("service").error("lifecycle failed: {}", ex.what());
      }
      status = 1;
    } else {
      status = s;
    }
    io_.stop();
  });
  io_.run();
  return status;
}

}  // namespace stargazer
