#pragma once
// The status leader lease: one worker at a time drives
// periodic work such as presence, so several workers do not each call the model and
// fight over the bot's status (the heartbeat has a lease of its own, `sg:leader:heartbeat`,
// without the gauge). The lease is `sg:leader:status` = the holder's instance
// id (bus/lease.hpp); the holder renews it every check, others take it once it expires;
// a holder that stops releases it at once (compare-and-delete), so failover after a
// clean stop takes one check interval rather than the ttl.

#include "stargazer/core/service.hpp"

#include <chrono>
#include <memory>
#include <string>

namespace stargazer::metrics {
class registry;
}
namespace stargazer::redis {
class connection;
}

namespace stargazer::worker {

struct leader_lease_settings {
  std::string key = "sg:leader:status";
  std::chrono::seconds ttl{180};
  std::chrono::milliseconds check_interval{20'000};

  // Lease: max(60 s, 3 × the periodic interval), outliving missed renewals; checked every
  // min(interval, ttl / 3) so a released lease is taken over within one interval.
  static leader_lease_settings for_interval(std::chrono::milliseconds interval);
};

class leader_lease final : public component {
public:
  leader_lease(redis::connection& conn, std::string holder_id, leader_lease_settings settings = {},
               metrics::registry* metrics = nullptr);
  ~leader_lease() override;

  std::string_view name() const override { return "leader-lease"; }
  boost::asio::awaitable<void> start() override;
  boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline) override;

  bool is_leader() const;
  // Acquires or renews now; what the periodic check does.
  boost::asio::awaitable<bool> check();

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::worker
