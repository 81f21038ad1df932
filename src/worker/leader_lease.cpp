#include "stargazer/worker/leader_lease.hpp"

#include "stargazer/bus/lease.hpp"
#include "stargazer/core/spawn.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/metrics.hpp"
#include "stargazer/redis/connection.hpp"

#include <boost/asio.hpp>

#include <algorithm>

namespace stargazer::worker {

namespace asio = boost::asio;

leader_lease_settings leader_lease_settings::for_interval(std::chrono::milliseconds interval) {
  leader_lease_settings s;
  s.ttl = std::max(std::chrono::seconds(60), std::chrono::duration_cast<std::chrono::seconds>(interval * 3));
  s.check_interval = std::clamp(interval, std::chrono::milliseconds(100),
                                std::chrono::duration_cast<std::chrono::milliseconds>(s.ttl) / 3);
  return s;
}

struct leader_lease::impl : std::enable_shared_from_this<impl> {
  impl(redis::connection& c, std::string id, leader_lease_settings s, metrics::registry* reg)
      : conn(c), holder(std::move(id)), settings(std::move(s)), timer(c.get_executor()), log("leader") {
    if (reg != nullptr)
      leader_gauge = &reg->make_gauge("stargazer_status_leader", "1 while this process holds the status leader lease");
  }

  asio::awaitable<bool> check() {
    auto r = co_await bus::take_or_renew_lease(conn, settings.key, holder, settings.ttl);
    const bool now_leader = r && *r;
    if (!r) log.debug("lease check failed: {}", r.error().message());
    if (now_leader != leader) log.info("{} the leader lease {}", now_leader ? "holding" : "lost", settings.key);
    leader = now_leader;
    if (leader_gauge != nullptr) leader_gauge->set(leader ? 1 : 0);
    co_return leader;
  }

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    while (!stopped) {
      co_await check();
      timer.expires_after(settings.check_interval);
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  redis::connection& conn;
  std::string holder;
  leader_lease_settings settings;
  asio::steady_timer timer;
  log::logger log;
  metrics::gauge* leader_gauge = nullptr;
  bool leader = false;
  bool stopped = false;
};

leader_lease::leader_lease(redis::connection& conn, std::string holder_id, leader_lease_settings settings,
                           metrics::registry* metrics)
    : impl_(std::make_shared<impl>(conn, std::move(holder_id), std::move(settings), metrics)) {}

leader_lease::~leader_lease() {
  impl_->stopped = true;
  impl_->timer.cancel();
}

asio::awaitable<void> leader_lease::start() {
  spawn(impl_->conn.get_executor(), impl_->run(), impl_->log.component());
  co_return;
}

asio::awaitable<void> leader_lease::stop(std::chrono::milliseconds) {
  impl_->stopped = true;
  impl_->timer.cancel();
  if (impl_->leader) {
    auto r = co_await bus::release_lease(impl_->conn, impl_->settings.key, impl_->holder);
    if (!r) impl_->log.warn("lease not released (it expires by itself): {}", r.error().message());
    impl_->leader = false;
    if (impl_->leader_gauge != nullptr) impl_->leader_gauge->set(0);
  }
}

bool leader_lease::is_leader() const { return impl_->leader; }

asio::awaitable<bool> leader_lease::check() { co_return co_await impl_->check(); }

}  // namespace stargazer::worker
