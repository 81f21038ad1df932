#pragma once
// A distributed lock: SET key token NX PX ttl with a random token, renewed every ttl/3
// while held, released by a compare-and-delete script (a lock is never extended or
// deleted by someone who does not own it). Blocking acquire polls with back-off up to
// a deadline. Use one object per acquisition; not thread-safe (one io thread).

#include <utility>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <memory>
#include <string>

namespace stargazer::redis {
class connection;
}

namespace stargazer::bus {

class distributed_lock {
public:
  distributed_lock(redis::connection& conn, std::string key, std::chrono::milliseconds ttl = std::chrono::seconds(30));
  ~distributed_lock();  // stops renewing; does not release (call release())
  distributed_lock(const distributed_lock&) = delete;
  distributed_lock& operator=(const distributed_lock&) = delete;

  boost::asio::awaitable<bool> try_acquire();
  // Retries until acquired or `deadline` passes.
  boost::asio::awaitable<bool> acquire(std::chrono::milliseconds deadline);
  boost::asio::awaitable<void> release();

  bool held() const;
  // True when a renewal found the lock gone or taken over (work under it may overlap).
  bool lost() const;
  const std::string& key() const;
  const std::string& token() const;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

// 32 lowercase hex digits from a CSPRNG (tokens, trace ids, request ids).
std::string random_hex_id();

}  // namespace stargazer::bus
