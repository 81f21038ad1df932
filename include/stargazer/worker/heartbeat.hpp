#pragma once
// The channel heartbeat (the original's daily look-in): the worker holding the heartbeat
// lease (`sg:leader:heartbeat`) starts a round after the initial delay and then once per
// interval. A round visits the channels the bot has spoken in (sg:heartbeat:channels),
// skipping those whose mode is `addressed`, that are quiet by !quiet, whose last message is
// newer than `quiet`, or for which the gateway's adapter says to skip
// (should_skip_channel_heartbeat RPC); each visit is claimed in Redis before its turn
// (sg:heartbeat:last:{platform}:{channel}, SET NX for about an interval), so a leader that
// dies mid-round leaves the rest to the next leader, which resumes the unfinished round
// (sg:heartbeat:round) without visiting a channel twice. The turn itself is
// message_processor::heartbeat: the model says something useful or nothing.

#include "stargazer/core/service.hpp"
#include "stargazer/platform/platform_adapter.hpp"
#include "stargazer/worker/leader_lease.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace stargazer::metrics {
class registry;
}
namespace stargazer::redis {
class connection;
}

namespace stargazer::worker {

class message_processor;

struct heartbeat_settings {
  std::chrono::seconds initial_delay{120};
  std::chrono::seconds interval{86400};  // 0: off
  std::chrono::seconds quiet{21600};     // a channel with a newer message is left alone
  std::size_t max_channels = 10'000;     // visited per round, least recently spoken in first
  std::chrono::seconds forget_after{90 * 24 * 3600};  // channels silent this long leave the index
};

// How often the leader checks whether a round is due or unfinished: min(initial delay,
// interval), within 1 s to 60 s.
std::chrono::milliseconds heartbeat_tick(const heartbeat_settings& s);
// The heartbeat's own lease, renewed at the tick.
leader_lease_settings heartbeat_lease_settings(const heartbeat_settings& s);
// A visited channel is not visited again for this long: the interval less a tenth, so the
// next round finds its marker gone.
std::chrono::seconds heartbeat_visit_ttl(const heartbeat_settings& s);

// A platform adapter for sends and RPCs outside any turn (the worker's proxy adapter).
using adapter_factory = std::function<std::unique_ptr<platform::platform_adapter>(const std::string& platform)>;

class heartbeat final : public component {
public:
  // `conn` and `processor` must outlive the component; `lease` is started by the caller.
  heartbeat(redis::connection& conn, message_processor& processor, std::shared_ptr<leader_lease> lease,
            adapter_factory adapters, heartbeat_settings settings, metrics::registry* metrics = nullptr);
  ~heartbeat() override;

  std::string_view name() const override { return "heartbeat"; }
  boost::asio::awaitable<void> start() override;
  boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline) override;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::worker
