#pragma once
// Per-channel order (docs/protocol.md §4.6): publishers give each entry of an ordering
// key (`okey`, a channel) a sequence number; consumers, in any number of processes,
// run entry n of a channel only after entry n-1 is done. Within a process, entries of
// one channel run one at a time, lowest sequence first. Entries without a sequence
// number (from publishers that do not number entries) are serialised by a per-channel
// distributed lock instead.

#include "stargazer/bus/order_mark.hpp"
#include "stargazer/bus/stream_consumer.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace stargazer::bus {

struct sequencer_settings {
  std::string stream;       // the stream the entries come from (names the order keys)
  std::string lock_prefix;  // e.g. "sg:lock:inbound:"; the key is prefix + okey
  std::chrono::milliseconds lock_ttl{30000};
  std::chrono::milliseconds lock_wait{60000};
  // How long entry n waits for n-1 before going ahead anyway (counted as a gap).
  // Longer than autoclaim interval + min idle, so a crashed predecessor is reclaimed first.
  std::chrono::milliseconds order_wait{120000};
};

class channel_sequencer {
public:
  channel_sequencer(redis::connection& conn, sequencer_settings settings, metrics::registry* metrics = nullptr);
  ~channel_sequencer();

  // Runs `body` for entry `e` in its channel's order (at once when it has no `okey`).
  // While it waits for its turn the entry is parked (see parking_lot). The body gets the
  // entry's order mark and may write it in its last script (order_mark.hpp); otherwise the
  // sequencer writes it after a body that did not ask for a retry.
  using marking_body = std::function<boost::asio::awaitable<outcome>(order_mark&)>;
  boost::asio::awaitable<outcome> run_in_order(const stream_entry& e, const delivery& d, const marking_body& body);
  // Marks the entry's sequence done without running it (dead-lettered by the sweep), so
  // its successors do not wait for it.
  boost::asio::awaitable<void> skip(const stream_entry& e);
  // A handler that runs `inner` in channel order.
  entry_handler wrap(entry_handler inner);

  std::uint64_t gaps() const;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::bus
