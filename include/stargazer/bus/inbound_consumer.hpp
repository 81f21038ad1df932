#pragma once
// The worker's inbound consumer: inbound envelopes decoded (malformed
// ones dead-lettered), run in channel order, skipped when already done
// (`sg:inbound:done:{entry_id}`), handed to the turn handler, followed by the
// turn-complete signal, with the trace lifecycle (CLAIMED, COMPLETED, ERRORED) in logs
// and metrics. Handler failures are retried by autoclaim up to the attempt limit,
// then dead-lettered.

#include "stargazer/bus/channel_sequencer.hpp"
#include "stargazer/bus/event_bus.hpp"
#include "stargazer/bus/stream_consumer.hpp"

#include <functional>
#include <memory>

namespace stargazer::bus {

// One inbound message to answer.
struct turn {
  std::string entry_id;  // the inbound stream entry; replies derive their message keys from it
  inbound_envelope message;
  delivery attempt;
  // Set by the handler's adapter when the turn's last send carried the completion
  // (completes_turn): then no separate turn_complete entry is published.
  mutable bool completion_published = false;
  // Numbered in its channel's order (docs/protocol.md §4.6): its order mark says when it
  // is done; otherwise a marker of its own (inbound_done_key) does.
  bool sequenced = false;
  // The entry's order mark: the turn's last send carries it (event_bus::publish_outbound),
  // one script less per turn; a turn that sends nothing leaves it to the sequencer.
  order_mark* order = nullptr;

  // The deterministic key of the n-th send of this turn (docs/protocol.md §4.5): a
  // replayed turn produces the same keys, so what was delivered is not sent again.
  std::string message_key(std::size_t n) const {
    return "sg:msg:" + message.platform + ":" + message.channel_id + ":" + entry_id + ":" + std::to_string(n);
  }
};

using turn_handler = std::function<boost::asio::awaitable<outcome>(const turn&)>;

struct inbound_consumer_settings {
  consumer_settings consumer;  // stream/group/consumer filled from the topology when empty
  sequencer_settings order;
  std::chrono::seconds done_marker_ttl{86400};
};

class inbound_consumer final : public component {
public:
  inbound_consumer(redis::connection& commands, const redis::connection_settings& blocking, event_bus& bus,
                   const std::string& consumer_name, turn_handler handler, inbound_consumer_settings settings = {},
                   metrics::registry* metrics = nullptr);
  ~inbound_consumer() override;

  std::string_view name() const override { return "inbound-consumer"; }
  boost::asio::awaitable<void> start() override;
  boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline) override;
  stream_consumer& engine();

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

inline std::string inbound_done_key(std::string_view entry_id) { return "sg:inbound:done:" + std::string(entry_id); }

}  // namespace stargazer::bus
