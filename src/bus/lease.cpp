#include "stargazer/bus/lease.hpp"

#include "stargazer/core/error.hpp"
#include "stargazer/redis/connection.hpp"

#include <vector>

namespace stargazer::bus {

namespace {

const redis::script take_or_renew_script(R"lua(
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
)lua");

const redis::script release_script(R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
)lua");

}  // namespace

boost::asio::awaitable<result<bool>> take_or_renew_lease(redis::connection& conn, std::string key, std::string holder,
                                                         std::chrono::milliseconds ttl) {
  const std::vector<std::string> keys{std::move(key)};
  const std::vector<std::string> args{std::move(holder), std::to_string(ttl.count())};
  auto r = co_await conn.eval(take_or_renew_script, keys, args);
  if (!r) co_return r.error();
  if (r->is_error()) co_return make_error_code(errc::redis_error);
  co_return r->to_integer().value_or(0) == 1;
}

boost::asio::awaitable<result<bool>> release_lease(redis::connection& conn, std::string key, std::string holder) {
  const std::vector<std::string> keys{std::move(key)};
  const std::vector<std::string> args{std::move(holder)};
  auto r = co_await conn.eval(release_script, keys, args);
  if (!r) co_return r.error();
  if (r->is_error()) co_return make_error_code(errc::redis_error);
  co_return r->to_integer().value_or(0) == 1;
}

}  // namespace stargazer::bus
