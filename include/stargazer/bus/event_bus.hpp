#pragma once
// The event bus: names, group creation per role, publishing with approximate
// MAXLEN trimming and per-channel sequence numbers, the sampled backlog warning, and
// stream diagnostics.

#include "stargazer/bus/envelope.hpp"
#include "stargazer/bus/order_mark.hpp"
#include "stargazer/bus/topology.hpp"
#include "stargazer/core/config.hpp"
#include "stargazer/core/result.hpp"

#include <utility>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace stargazer::metrics {
class registry;
class gauge;
}  // namespace stargazer::metrics

namespace stargazer::redis {
class connection;
}

namespace stargazer::bus {

struct event_bus_settings {
  topology names = topology::from_environment();
  std::uint64_t stream_maxlen = 100'000;  // floored at 1000: a tiny cap would trim unread entries
  std::chrono::milliseconds backlog_check_interval{1000};  // per stream, not on every publish
};

struct stream_stats {
  std::int64_t length = 0;
  std::int64_t pending = 0;    // entries delivered to the group and not acknowledged
  std::int64_t lag = -1;       // entries not yet delivered to the group (-1: unknown)
  std::int64_t dead_letters = 0;
};

class event_bus {
public:
  event_bus(redis::connection& conn, event_bus_settings settings, metrics::registry* metrics = nullptr);
  ~event_bus();

  const topology& names() const;
  std::uint64_t maxlen() const;

  // Creates the consumer groups a role needs (idempotent: BUSYGROUP is fine). Throws
  // std::runtime_error naming the stream on any other error.
  boost::asio::awaitable<void> ensure_streams(role r, const std::vector<std::string>& platforms);
  boost::asio::awaitable<void> ensure_group(const std::string& stream, const std::string& group);

  // XADD with approximate MAXLEN; entries of a channel get an ordering key and sequence
  // number (docs/protocol.md §4.6). Return the entry id.
  boost::asio::awaitable<result<std::string>> publish_inbound(const inbound_envelope& e);
  // publish_inbound at most once per `marker_key`: the same script that appends the entry
  // sets the marker to e.message_id for `ttl`, so a crash cannot separate the two. When
  // the marker exists nothing is published and `first_message_id` is its value.
  struct once_result {
    std::string entry_id;          // empty when published before
    std::string first_message_id;  // set when published before
  };
  boost::asio::awaitable<result<once_result>> publish_inbound_once(const inbound_envelope& e,
                                                                   const std::string& marker_key,
                                                                   std::chrono::seconds ttl);
  // `also_mark`: an inbound entry's order mark, written by the same script (a turn's last
  // send ends the turn: order_mark.hpp); set written when it was.
  boost::asio::awaitable<result<std::string>> publish_outbound(const std::string& platform, const outbound_envelope& e,
                                                               order_mark* also_mark = nullptr);
  // The general form: `okey` empty publishes without a sequence number.
  boost::asio::awaitable<result<std::string>> publish(const std::string& stream, const std::string& data,
                                                      const std::string& trace_id, const std::string& okey,
                                                      order_mark* also_mark = nullptr);

  // XLEN, XPENDING summary, the group's lag (XINFO GROUPS) and the DLQ length, in one round trip.
  boost::asio::awaitable<result<stream_stats>> stats(const std::string& stream, const std::string& group);

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::bus
