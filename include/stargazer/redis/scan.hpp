#pragma once
// Walking the keyspace with SCAN: for operator acts and reports that must find keys no index
// lists (deleting an instance, usage over every channel), never for a message's path.

#include "stargazer/core/result.hpp"
#include "stargazer/redis/connection.hpp"

#include <boost/asio/awaitable.hpp>

#include <string>
#include <vector>

namespace stargazer::redis {

// Every key matching the glob `pattern` (SCAN MATCH, 1,000 per page; a key renamed during
// the walk may be missed or seen twice, as SCAN guarantees no more).
boost::asio::awaitable<result<std::vector<std::string>>> scan_keys(connection& conn, const std::string& pattern);

}  // namespace stargazer::redis
