#pragma once
// Quotas and usage accounting in Redis, shared by every gateway and worker (docs/protocol.md
// §5.10; the rules and key names are platform/quota_rules.hpp).
//
// admit(): one Lua script checks a turn against every limit that is on and takes a token
// from each rate's bucket only when all of them admit it, using the server's clock (TIME),
// so every process sees the same buckets whatever its own clock says. With every limit off
// it sends nothing. A refusal says which limit, how long until it would admit, and whether
// this refusal is the first of its window for the subject (SET NX PX in the same script):
// only that one gets the polite reply.
//
// record(): a turn's tokens added to its channel's counters of the day, one pipelined
// round trip; or, with batching on (the worker's), summed in memory per channel and day and
// written by flush_usage() once a second: three HINCRBY per channel and second instead of
// per turn. read_usage() / scan_usage(): the counters back, for the REST route and
// `stargazer usage`.

#include "stargazer/core/result.hpp"
#include "stargazer/platform/quota_rules.hpp"

#include <boost/asio/awaitable.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace stargazer::metrics {
class counter;
class registry;
}  // namespace stargazer::metrics
namespace stargazer::redis {
class connection;
}

namespace stargazer::platform {

// Whose turn it is.
struct quota_subject {
  std::string platform;
  std::string channel_id;  // on the Redis platform, the instance id
  std::string user_id;     // empty: the per-user rate does not apply
};

struct quota_decision {
  bool admitted = true;
  quota_limit limit = quota_limit::rate_user;  // when refused: the limit that refused
  std::chrono::milliseconds retry_after{0};    // when refused: until that limit would admit a turn
  bool notify = false;  // the first refusal of the subject's window (asked for with `notice`)
};

// The tokens one turn's model calls used (the API's `usage` fields, summed).
struct token_usage {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
};

// One day of one channel's usage.
struct usage_day {
  std::string day;  // YYYY-MM-DD
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t turns = 0;
};

// The days of one channel that have usage, oldest first.
struct channel_usage {
  std::string platform;
  std::string channel_id;
  std::vector<usage_day> days;
};

class quotas {
public:
  // `metrics` (may be null): stargazer_rate_limited_total{limit=...}, counted per refusal.
  explicit quotas(redis::connection& conn, metrics::registry* metrics = nullptr);

  // Admits one turn of `who` under `limits`, or says which limit holds it back (the budget
  // first, then the user's rate, then the channel's). `notice`: a refusal also marks the
  // subject as told for the limit's window (a rate's period; the budget's day), and
  // `notify` says whether this call set the mark. Every limit off: admitted, no command.
  boost::asio::awaitable<result<quota_decision>> admit(const quota_settings& limits, const quota_subject& who,
                                                       bool notice);

  // Adds one turn to the channel's usage of today (UTC): HINCRBY prompt_tokens,
  // completion_tokens, turns and EXPIRE usage_ttl, pipelined. With batching on, the turn is
  // summed in memory for flush_usage() instead, unless `at_once` (a token budget reads
  // these counters before each turn, so a turn it governs is counted before the next).
  boost::asio::awaitable<std::error_code> record(std::string_view platform, std::string_view channel_id,
                                                 token_usage used, bool at_once = false);

  // Batching: what a process that dies loses is the usage since the last flush (its
  // accounting, never a turn); stopping flushes.
  void batch_usage(bool on) { batching_ = on; }
  // Writes the sums recorded since the last flush, every channel's in one pipeline. When
  // Redis cannot be reached they are kept for the next flush. A call while one is in
  // flight does nothing (see usage_flush_in_flight).
  boost::asio::awaitable<std::error_code> flush_usage();
  bool usage_flush_in_flight() const { return flushing_; }
  bool usage_pending() const { return !pending_.empty(); }

  redis::connection& connection() const { return conn_; }

private:
  struct usage_sum {
    std::int64_t prompt_tokens = 0;
    std::int64_t completion_tokens = 0;
    std::int64_t turns = 0;
    usage_sum& operator+=(const usage_sum& o) {
      prompt_tokens += o.prompt_tokens;
      completion_tokens += o.completion_tokens;
      turns += o.turns;
      return *this;
    }
  };
  using usage_sums = std::map<std::string, usage_sum>;  // by usage key (channel and day)
  // One pipeline: the sums added to their keys, each key's TTL set when it is due or new.
  // `only_if_connected`: fail with errc::not_connected, surely unsent, while Redis is away.
  boost::asio::awaitable<std::error_code> write_usage(const usage_sums& sums, bool only_if_connected);

  redis::connection& conn_;
  std::array<metrics::counter*, 3> refused_{};  // by quota_limit
  bool batching_ = false;
  bool flushing_ = false;
  usage_sums pending_;
};

// The channel's usage on the days from `from` to `to` (inclusive, at most max_usage_days),
// only days with any usage. One pipelined round trip.
boost::asio::awaitable<result<std::vector<usage_day>>> read_usage(redis::connection& conn, std::string_view platform,
                                                                  std::string_view channel_id,
                                                                  std::chrono::sys_days from, std::chrono::sys_days to);

// Every channel's usage on the days from `from` to `to`, found by SCAN over sg:usage:*
// (an operator command's read, not for request paths). Sorted by platform and channel.
boost::asio::awaitable<result<std::vector<channel_usage>>> scan_usage(redis::connection& conn,
                                                                      std::chrono::sys_days from,
                                                                      std::chrono::sys_days to);

}  // namespace stargazer::platform
