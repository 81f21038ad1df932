#pragma once
// A lease in Redis: `key` holds the holder's id with an expiry. Taking it succeeds when it
// is free or already the caller's (a process restarted under the same id gets it back at
// once), and renews it; releasing deletes it only when the caller holds it. A holder that
// dies stops renewing, and the lease is free again after its ttl. One pattern for every
// "exactly one process does this" in the project: the Discord shards, the Matrix sync loop,
// the status leader.

#include "stargazer/core/result.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <string>

namespace stargazer::redis {
class connection;
class script;
}  // namespace stargazer::redis

namespace stargazer::bus {

// True when `holder` holds `key` now (taken or renewed for `ttl`), false when another does;
// an error when Redis did not answer (the lease may still be the caller's until its ttl).
boost::asio::awaitable<result<bool>> take_or_renew_lease(redis::connection& conn, std::string key, std::string holder,
                                                         std::chrono::milliseconds ttl);

// Deletes `key` when `holder` holds it; true when it did.
boost::asio::awaitable<result<bool>> release_lease(redis::connection& conn, std::string key, std::string holder);

}  // namespace stargazer::bus
