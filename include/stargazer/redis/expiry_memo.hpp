#pragma once

// Which keys this connection gave their expiry recently. A key written on every message (a
// channel's order set, history index, event stream, usage of the day) needs its TTL
// refreshed, not re-sent with each write: one EXPIRE per key per `interval` keeps every
// such key alive for as long as it is written (its TTL is far longer than the interval)
// and goes away a TTL after the last write, as before.
//
// Each Redis connection has one (connection::expiries()), emptied on every (re)connect.
// A key deleted and re-created by another process inside the interval waits for its TTL
// until this connection writes it again after the interval. Writers that can tell a key is
// new (HINCRBY returned 1) give it the TTL at once; the others are keys with an owner that
// deletes them or a cap that bounds them (docs/protocol.md, "Keys and their lifetimes").

#include <chrono>
#include <cstddef>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace stargazer::redis {

class expiry_memo {
 public:
  using clock_type = std::chrono::steady_clock;

  explicit expiry_memo(std::chrono::seconds interval = std::chrono::minutes(10), std::size_t capacity = 200'000);

  // true: the caller sends the EXPIRE with this write (and it counts as sent from now on).
  bool due(std::string_view key, clock_type::time_point now = clock_type::now());
  // This process deleted the key: its next write gives it the TTL again.
  void forget(std::string_view key);
  // Every key is due again (the connection reached a server that may not have our writes).
  void clear();

 private:
  std::chrono::seconds interval_;
  std::size_t capacity_;
  std::mutex mutex_;
  std::list<std::string> order_;  // least recently refreshed first
  struct entry {
    clock_type::time_point refreshed;
    std::list<std::string>::iterator position;
  };
  std::unordered_map<std::string, entry> entries_;
};

}  // namespace stargazer::redis
