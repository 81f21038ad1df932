// The identity store (platform/identity.hpp): three Lua scripts, so an account's key and
// its person's set change together.

#include "stargazer/platform/identity.hpp"

#include "stargazer/bus/lock.hpp"
#include "stargazer/core/error.hpp"
#include "stargazer/redis/connection.hpp"
#include "stargazer/redis/request.hpp"

#include <algorithm>
#include <set>

namespace stargazer::platform {

namespace {

// KEYS: the accounts' user keys. ARGV: the unified id asked for ('' for none), a fresh id,
// '1' to merge, the most accounts one person may hold, then the accounts ("platform:id").
const redis::script& link_script() {
  static const redis::script s(R"lua(
local n = #KEYS
local current, ids, seen = {}, {}, {}
for i = 1, n do
  local id = redis.call('GET', KEYS[i])
  current[i] = id
  if id and not seen[id] then seen[id] = true; ids[#ids + 1] = id end
end
local target = ARGV[1]
if target == '' then target = ids[1] or ARGV[2] end
local others = {}
for _, id in ipairs(ids) do if id ~= target then others[#others + 1] = id end end
if #others > 0 and ARGV[3] ~= '1' then
  local out = {'conflict'}
  for i = 1, n do
    if current[i] and current[i] ~= target then out[#out + 1] = ARGV[4 + i]; out[#out + 1] = current[i] end
  end
  return out
end
local prefix = 'sg:identity:unified:'
local tkey = prefix .. target
local created = redis.call('EXISTS', tkey) == 0
local members, count = {}, 0
local function add(m) if not members[m] then members[m] = true; count = count + 1 end end
for _, m in ipairs(redis.call('SMEMBERS', tkey)) do add(m) end
for _, id in ipairs(others) do
  for _, m in ipairs(redis.call('SMEMBERS', prefix .. id)) do add(m) end
end
for i = 1, n do add(ARGV[4 + i]) end
if count > tonumber(ARGV[4]) then return {'too_many', tostring(count)} end
for _, id in ipairs(others) do
  local okey = prefix .. id
  for _, m in ipairs(redis.call('SMEMBERS', okey)) do
    redis.call('SET', 'sg:identity:user:' .. m, target)
    redis.call('SADD', tkey, m)
  end
  redis.call('DEL', okey)
end
for i = 1, n do
  redis.call('SET', KEYS[i], target)
  redis.call('SADD', tkey, ARGV[4 + i])
end
return {'linked', target, created and '1' or '0', others, redis.call('SMEMBERS', tkey)}
)lua");
  return s;
}

// KEYS[1]: the account's user key; ARGV[1]: the account. The set vanishes with its last member.
const redis::script& unlink_script() {
  static const redis::script s(R"lua(
local id = redis.call('GET', KEYS[1])
if not id then return false end
redis.call('DEL', KEYS[1])
redis.call('SREM', 'sg:identity:unified:' .. id, ARGV[1])
return id
)lua");
  return s;
}

std::vector<std::string> sorted_strings(const redis::reply& array) {
  std::vector<std::string> out;
  for (const auto& e : array.elements()) out.push_back(e.str());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

boost::asio::awaitable<result<link_outcome>> link_identity(redis::connection& conn, link_request req,
                                                           identity_limits limits) {
  std::vector<std::string> keys;
  std::vector<std::string> args{req.unified_id, bus::random_hex_id().substr(0, 16), req.merge ? "1" : "0",
                                std::to_string(limits.max_accounts_per_person)};
  std::set<std::string> named;
  for (const auto& a : req.accounts) {
    auto text = a.text();
    if (!named.insert(text).second) continue;  // named twice: linked once
    keys.push_back(identity_user_key(a.platform, a.user_id));
    args.push_back(std::move(text));
  }
  if (keys.empty() || keys.size() > limits.max_accounts_per_link) co_return make_error_code(errc::invalid_argument);
  auto r = co_await conn.eval(link_script(), keys, args);
  if (!r) co_return r.error();
  if (!r->is_array() || r->elements().empty()) co_return make_error_code(errc::redis_error);
  const auto& e = r->elements();
  const auto& what = e[0].str();
  link_outcome out;
  if (what == "conflict") {
    out.what = link_outcome::status::conflict;
    for (std::size_t i = 1; i + 1 < e.size(); i += 2) out.conflicts.emplace_back(e[i].str(), e[i + 1].str());
    co_return out;
  }
  if (what == "too_many" && e.size() == 2) {
    out.what = link_outcome::status::too_many_accounts;
    out.accounts_after = static_cast<std::size_t>(e[1].to_integer().value_or(0));
    co_return out;
  }
  if (what != "linked" || e.size() != 5) co_return make_error_code(errc::unexpected_reply);
  out.identity.unified_id = e[1].str();
  out.created = e[2].str() == "1";
  out.merged_ids = sorted_strings(e[3]);
  out.identity.accounts = sorted_strings(e[4]);
  co_return out;
}

boost::asio::awaitable<result<std::optional<std::string>>> unlink_identity(redis::connection& conn, account who) {
  const std::vector<std::string> keys{identity_user_key(who.platform, who.user_id)};
  const std::vector<std::string> args{who.text()};
  auto r = co_await conn.eval(unlink_script(), keys, args);
  if (!r) co_return r.error();
  if (r->is_error()) co_return make_error_code(errc::redis_error);
  // Named, not temporaries in co_return: GCC 12 destroys those twice.
  std::optional<std::string> unified_id;
  if (!r->is_nil()) unified_id = r->str();
  co_return unified_id;
}

boost::asio::awaitable<result<std::optional<unified_identity>>> resolve_identity(redis::connection& conn,
                                                                                 std::string platform,
                                                                                 std::string user_id) {
  // Runs on every turn and almost every account is unlinked: one GET, and the person's
  // accounts only for a linked one. (A link changed between the two reads names the
  // accounts as of the second; the prompt's names are all that depends on it.)
  auto r = co_await conn.command("GET", identity_user_key(platform, user_id));
  if (!r) co_return r.error();
  if (r->is_error()) co_return make_error_code(errc::redis_error);
  if (r->is_nil()) co_return std::optional<unified_identity>{};
  co_return co_await identity_by_id(conn, r->str());
}

boost::asio::awaitable<result<std::optional<unified_identity>>> identity_by_id(redis::connection& conn,
                                                                               std::string unified_id) {
  const auto key = identity_unified_key(unified_id);
  auto r = co_await conn.command("SMEMBERS", key);
  if (!r) co_return r.error();
  if (r->is_error()) co_return make_error_code(errc::redis_error);
  if (r->elements().empty()) co_return std::optional<unified_identity>{};
  co_return std::optional<unified_identity>(unified_identity{std::move(unified_id), sorted_strings(*r)});
}

}  // namespace stargazer::platform
