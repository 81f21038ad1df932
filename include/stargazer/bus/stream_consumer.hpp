#pragma once
// The consumer-group engine shared by the worker's inbound consumer, the gateway's
// outbound consumers and the tools service: XREADGROUP on a dedicated
// blocking connection with bounded concurrency, batched XACK, an XAUTOCLAIM sweep
// that follows its cursor and counts attempts in `{stream}:attempts`, dead-lettering to
// `{stream}:dlq` (original fields + reason, attempts, consumer) in one MULTI with the
// XACK, and a graceful stop that drains entries in flight.

#include "stargazer/bus/stream_entry.hpp"
#include "stargazer/core/service.hpp"
#include "stargazer/redis/connection.hpp"

#include <utility>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace stargazer::metrics {
class registry;
}

namespace stargazer::bus {

// What became of an entry.
struct outcome {
  enum class kind { ack, retry, dead_letter };
  kind what = kind::ack;
  std::string reason;  // retry: for the log; dead_letter: "<code>: <detail>"

  static outcome ack() { return {}; }
  static outcome retry(std::string why) { return {kind::retry, std::move(why)}; }
  static outcome dead_letter(std::string reason) { return {kind::dead_letter, std::move(reason)}; }
};

// Entries that only wait for their turn (e.g. behind an earlier entry of their channel)
// are "parked": they do not count against max_in_flight, so one stalled channel cannot
// stop the consumer from reading entries of other channels.
class parking_lot {
public:
  virtual ~parking_lot() = default;
  virtual void enter() = 0;
  virtual void leave() = 0;
};

struct delivery {
  std::uint64_t attempts = 0;  // reclaims so far (0: first delivery)
  bool reclaimed = false;
  parking_lot* parking = nullptr;
  std::size_t local_retry = 0;  // runs again here after a `retry` (0: the first run here)
};

using entry_handler = std::function<boost::asio::awaitable<outcome>(const stream_entry&, const delivery&)>;

struct consumer_settings {
  std::string stream;
  std::string group;
  std::string consumer;                                 // this process' instance id
  std::size_t max_in_flight = 64;                       // entries processed at once
  std::size_t read_count = 10;                          // XREADGROUP COUNT, capped by free slots
  std::chrono::milliseconds block{5000};                // XREADGROUP BLOCK
  std::chrono::milliseconds autoclaim_interval{30000};  // between XAUTOCLAIM sweeps
  std::chrono::milliseconds autoclaim_min_idle{60000};  // idle time before an entry is reclaimed
  std::size_t autoclaim_count = 10;                     // XAUTOCLAIM COUNT per page
  std::uint64_t max_attempts = 3;                       // reclaims that still run; the next dead-letters
  // An entry whose handler says `retry` (Redis away, a platform 5xx) runs again here after
  // a pause that doubles from retry_pause up to retry_pause_max, at most local_retries
  // times, before it is left to the autoclaim sweep (a minute away): a short outage then
  // delays a channel by seconds, not by autoclaim_min_idle.
  std::size_t local_retries = 5;
  std::chrono::milliseconds retry_pause{100};
  std::chrono::milliseconds retry_pause_max{2000};
  std::uint64_t dlq_maxlen = 100'000;
  std::chrono::milliseconds error_pause{2000};          // after a failed read
  std::size_t max_parked_factor = 4;                    // parked entries beyond max_in_flight x this count as active
  // Runs after the autoclaim sweep dead-letters an entry (e.g. to mark its sequence done).
  std::function<boost::asio::awaitable<void>(const stream_entry&)> after_dead_letter;
};

class stream_consumer final : public component {
public:
  // `commands` carries acks, claims and DLQ writes (shared, pipelined); the consumer
  // opens its own connection from `blocking` for XREADGROUP BLOCK.
  stream_consumer(redis::connection& commands, redis::connection_settings blocking, consumer_settings settings,
                  entry_handler handler, metrics::registry* metrics = nullptr);
  ~stream_consumer() override;

  std::string_view name() const override;
  boost::asio::awaitable<void> start() override;
  // Stops reading, waits for entries in flight up to `deadline`, flushes acks.
  boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline) override;

  // Runs one autoclaim sweep now (tests; the loop runs it every autoclaim_interval).
  boost::asio::awaitable<void> sweep();

  std::size_t in_flight() const;
  std::uint64_t processed() const;
  const consumer_settings& settings() const;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::bus
