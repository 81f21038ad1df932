#include "stargazer/platform/webchat/webchat_auth.hpp"

#include "stargazer/bus/lock.hpp"
#include "stargazer/core/digest.hpp"
#include "stargazer/redis/connection.hpp"
#include "stargazer/redis/request.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <map>

namespace stargazer::platform {

namespace asio = boost::asio;

namespace {

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::int64_t to_int(const std::string& text) {
  std::int64_t v = 0;
  std::from_chars(text.data(), text.data() + text.size(), v);
  return v;
}

using fields = std::map<std::string, std::string, std::less<>>;

// HGETALL's flat [field, value, ...] array as a map (empty for a missing key).
fields hash_of(const redis::reply& r) {
  fields out;
  const auto& e = r.elements();
  for (std::size_t i = 0; i + 1 < e.size(); i += 2) out.emplace(e[i].str(), e[i + 1].str());
  return out;
}

std::string field(const fields& f, std::string_view name) {
  const auto it = f.find(name);
  return it == f.end() ? std::string() : it->second;
}

webchat_identity identity_of(const std::string& digest, const fields& f) {
  webchat_identity id;
  id.session_digest = digest;
  id.session_id = field(f, "id");
  id.name = field(f, "name");
  id.user_id = field(f, "user_id");
  id.rooms = split_rooms(field(f, "rooms"));
  id.admin = field(f, "admin") == "1";
  id.created_at = to_int(field(f, "created_at"));
  id.expires_at = to_int(field(f, "expires_at"));
  id.invite_id = field(f, "invite_id");
  return id;
}

webchat_invite invite_of(const fields& f, std::int64_t now) {
  webchat_invite inv;
  inv.invite_id = field(f, "id");
  inv.name = field(f, "name");
  inv.user_id = field(f, "user_id");
  inv.rooms = split_rooms(field(f, "rooms"));
  inv.admin = field(f, "admin") == "1";
  inv.created_at = to_int(field(f, "created_at"));
  inv.expires_at = to_int(field(f, "expires_at"));
  inv.state = field(f, "state");
  inv.used_at = to_int(field(f, "used_at"));
  inv.session_id = field(f, "session_id");
  if (inv.state == "pending" && inv.expires_at <= now) inv.state = "expired";
  return inv;
}

// A pending invite becomes a session in one step, so a link works once however many
// gateways are asked at the same moment. KEYS: invite, session, sessions index. ARGV: now,
// session TTL, session digest, session id. Returns {outcome, name, user_id, rooms, admin,
// expires_at, invite id}.
const redis::script& redeem_script() {
  static const redis::script s(R"lua(
local raw = redis.call('HGETALL', KEYS[1])
if #raw == 0 then return {'unknown'} end
local invite = {}
for i = 1, #raw, 2 do invite[raw[i]] = raw[i + 1] end
if invite.state == 'used' then return {'used'} end
if invite.state == 'revoked' then return {'revoked'} end
local now = tonumber(ARGV[1])
if tonumber(invite.expires_at) <= now then return {'expired'} end
local expires_at = tostring(now + tonumber(ARGV[2]))
local rooms = invite.rooms or ''
local admin = invite.admin or '0'
redis.call('HSET', KEYS[2], 'id', ARGV[4], 'name', invite.name, 'user_id', invite.user_id, 'rooms', rooms,
           'admin', admin, 'created_at', ARGV[1], 'expires_at', expires_at, 'invite_id', invite.id)
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], expires_at, ARGV[3])
redis.call('HSET', KEYS[1], 'state', 'used', 'used_at', ARGV[1], 'session_id', ARGV[4], 'session_digest', ARGV[3])
return {'ok', invite.name, invite.user_id, rooms, admin, expires_at, invite.id}
)lua");
  return s;
}

// Marks an invite revoked and returns the digest of the session it opened ('' when none),
// atomically with redeem_script: a link opened at the same moment is either refused or its
// session is returned here to be revoked. KEYS: invite. ARGV: now. nil: no such invite.
const redis::script& revoke_invite_script() {
  static const redis::script s(R"lua(
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'state', 'revoked', 'revoked_at', ARGV[1])
return redis.call('HGET', KEYS[1], 'session_digest') or ''
)lua");
  return s;
}

}  // namespace

std::string new_webchat_token() { return bus::random_hex_id() + bus::random_hex_id(); }

// ---------------------------------------------------------------------------------------
// The store

webchat_auth_store::webchat_auth_store(redis::connection& conn, std::chrono::seconds tombstone)
    : conn_(conn), tombstone_(tombstone) {}

asio::awaitable<result<webchat_auth_store::created_invite>> webchat_auth_store::create_invite(
    const invite_request& r) {
  created_invite out;
  out.token = new_webchat_token();
  const auto digest = sha256_hex(out.token);
  const auto now = unix_now();
  auto& inv = out.invite;
  inv.invite_id = webchat_public_id(digest);
  inv.name = r.name;
  inv.user_id = invited_user_id(r.name);
  inv.rooms = r.rooms;
  inv.admin = r.admin;
  inv.created_at = now;
  inv.expires_at = now + r.ttl.count();
  inv.state = "pending";
  const auto key = webchat_invite_key(digest);
  redis::request req;
  req.push("MULTI");
  req.push("HSET", key, "id", inv.invite_id, "name", inv.name, "user_id", inv.user_id, "rooms", join_rooms(inv.rooms),
           "admin", inv.admin ? "1" : "0", "created_at", std::to_string(now), "expires_at",
           std::to_string(inv.expires_at), "state", "pending");
  req.push("EXPIRE", key, std::to_string((r.ttl + tombstone_).count()));
  req.push("ZADD", std::string(webchat_invites_index), std::to_string(inv.expires_at), digest);
  req.push("EXEC");
  auto replies = co_await conn_.exec(std::move(req));
  if (!replies) co_return replies.error();
  if (!replies->back().is_array()) co_return make_error_code(std::errc::io_error);
  co_return out;
}

asio::awaitable<result<std::vector<webchat_invite>>> webchat_auth_store::list_invites() {
  const auto now = unix_now();
  const std::string index(webchat_invites_index);
  redis::request prune;
  // Invites whose key (and tombstone) expired leave the index.
  prune.push("ZREMRANGEBYSCORE", index, "-inf", "(" + std::to_string(now - tombstone_.count()));
  prune.push("ZRANGE", index, "0", "-1");
  auto listed = co_await conn_.exec(std::move(prune));
  if (!listed) co_return listed.error();
  std::vector<webchat_invite> out;
  const auto& digests = listed->back().elements();
  if (digests.empty()) co_return out;
  redis::request read;
  for (const auto& d : digests) read.push("HGETALL", webchat_invite_key(d.str()));
  auto hashes = co_await conn_.exec(std::move(read));
  if (!hashes) co_return hashes.error();
  for (const auto& h : *hashes)
    if (auto f = hash_of(h); !f.empty()) out.push_back(invite_of(f, now));
  std::stable_sort(out.begin(), out.end(), [](const webchat_invite& a, const webchat_invite& b) {
    return (a.state == "pending") > (b.state == "pending");
  });
  co_return out;
}

asio::awaitable<result<webchat_auth_store::redeemed>> webchat_auth_store::redeem(std::string invite_token,
                                                                                std::chrono::seconds session_ttl) {
  redeemed out;
  if (!valid_webchat_token(invite_token)) {
    out.refusal = redeem_refusal::unknown;
    co_return out;
  }
  out.token = new_webchat_token();
  const auto session_digest = sha256_hex(out.token);
  const auto session_id = webchat_public_id(session_digest);
  const auto now = unix_now();
  const std::vector<std::string> keys{webchat_invite_key(sha256_hex(invite_token)),
                                      webchat_session_key(session_digest), std::string(webchat_sessions_index)};
  const std::vector<std::string> args{std::to_string(now), std::to_string(session_ttl.count()), session_digest,
                                      session_id};
  auto r = co_await conn_.eval(redeem_script(), keys, args);
  if (!r) co_return r.error();
  const auto& e = r->elements();
  if (r->is_error() || e.empty()) co_return make_error_code(std::errc::io_error);
  const auto& outcome = e[0].str();
  if (outcome == "unknown") out.refusal = redeem_refusal::unknown;
  else if (outcome == "used") out.refusal = redeem_refusal::used;
  else if (outcome == "revoked") out.refusal = redeem_refusal::revoked;
  else if (outcome == "expired") out.refusal = redeem_refusal::expired;
  if (out.refusal != redeem_refusal::none) {
    out.token.clear();
    co_return out;
  }
  if (outcome != "ok" || e.size() != 7) co_return make_error_code(std::errc::io_error);
  auto& id = out.identity;
  id.session_digest = session_digest;
  id.session_id = session_id;
  id.name = e[1].str();
  id.user_id = e[2].str();
  id.rooms = split_rooms(e[3].str());
  id.admin = e[4].str() == "1";
  id.created_at = now;
  id.expires_at = to_int(e[5].str());
  id.invite_id = e[6].str();
  co_return out;
}

asio::awaitable<result<std::optional<webchat_identity>>> webchat_auth_store::session(std::string token) {
  if (!valid_webchat_token(token)) co_return std::optional<webchat_identity>{};
  const auto digest = sha256_hex(token);
  auto r = co_await conn_.command("HGETALL", webchat_session_key(digest));
  if (!r) co_return r.error();
  const auto f = hash_of(*r);
  if (f.empty()) co_return std::optional<webchat_identity>{};
  co_return std::optional<webchat_identity>(identity_of(digest, f));
}

asio::awaitable<result<std::vector<webchat_identity>>> webchat_auth_store::list_sessions() {
  const std::string index(webchat_sessions_index);
  redis::request prune;
  prune.push("ZREMRANGEBYSCORE", index, "-inf", "(" + std::to_string(unix_now()));
  prune.push("ZRANGE", index, "0", "-1");
  auto listed = co_await conn_.exec(std::move(prune));
  if (!listed) co_return listed.error();
  std::vector<webchat_identity> out;
  const auto& digests = listed->back().elements();
  if (digests.empty()) co_return out;
  redis::request read;
  for (const auto& d : digests) read.push("HGETALL", webchat_session_key(d.str()));
  auto hashes = co_await conn_.exec(std::move(read));
  if (!hashes) co_return hashes.error();
  for (std::size_t i = 0; i < hashes->size() && i < digests.size(); ++i)
    if (auto f = hash_of((*hashes)[i]); !f.empty()) out.push_back(identity_of(digests[i].str(), f));
  co_return out;
}

asio::awaitable<std::error_code> webchat_auth_store::revoke_digests(const std::vector<std::string>& session_digests) {
  if (session_digests.empty()) co_return std::error_code{};
  redis::request req;
  req.push("MULTI");
  for (const auto& d : session_digests) {
    req.push("DEL", webchat_session_key(d));
    req.push("ZREM", std::string(webchat_sessions_index), d);
    req.push("PUBLISH", std::string(webchat_revoked_channel), d);
  }
  req.push("EXEC");
  auto r = co_await conn_.exec(std::move(req));
  if (!r) co_return r.error();
  if (!r->back().is_array()) co_return make_error_code(std::errc::io_error);
  co_return std::error_code{};
}

asio::awaitable<result<std::optional<webchat_identity>>> webchat_auth_store::revoke_session(std::string session_id) {
  if (!valid_webchat_public_id(session_id)) co_return std::optional<webchat_identity>{};
  auto sessions = co_await list_sessions();
  if (!sessions) co_return sessions.error();
  for (auto& s : *sessions) {
    if (s.session_id != session_id) continue;
    const std::vector<std::string> digests{s.session_digest};
    if (const auto ec = co_await revoke_digests(digests)) co_return ec;
    co_return std::optional<webchat_identity>(std::move(s));
  }
  co_return std::optional<webchat_identity>{};
}

asio::awaitable<result<std::optional<webchat_invite>>> webchat_auth_store::revoke_invite(std::string invite_id) {
  if (!valid_webchat_public_id(invite_id)) co_return std::optional<webchat_invite>{};
  auto listed = co_await conn_.command("ZRANGE", std::string(webchat_invites_index), "0", "-1");
  if (!listed) co_return listed.error();
  for (const auto& d : listed->elements()) {
    const auto& digest = d.str();
    if (webchat_public_id(digest) != invite_id) continue;
    const std::vector<std::string> keys{webchat_invite_key(digest)};
    const std::vector<std::string> args{std::to_string(unix_now())};
    auto session_digest = co_await conn_.eval(revoke_invite_script(), keys, args);
    if (!session_digest) co_return session_digest.error();
    if (session_digest->is_error()) co_return make_error_code(std::errc::io_error);
    if (!session_digest->is_bulk()) co_return std::optional<webchat_invite>{};  // the key expired meanwhile
    if (!session_digest->str().empty()) {
      const std::vector<std::string> opened{session_digest->str()};
      if (const auto ec = co_await revoke_digests(opened)) co_return ec;
    }
    auto hash = co_await conn_.command("HGETALL", webchat_invite_key(digest));
    if (!hash) co_return hash.error();
    co_return std::optional<webchat_invite>(invite_of(hash_of(*hash), unix_now()));
  }
  co_return std::optional<webchat_invite>{};
}

asio::awaitable<result<webchat_auth_store::revoked_counts>> webchat_auth_store::revoke_name(std::string name) {
  revoked_counts counts;
  auto sessions = co_await list_sessions();
  if (!sessions) co_return sessions.error();
  std::vector<std::string> digests;
  for (const auto& s : *sessions)
    if (s.name == name) digests.push_back(s.session_digest);
  auto invites = co_await list_invites();
  if (!invites) co_return invites.error();
  // Pending invites of the name: revoked by id (the script also catches one opened meanwhile).
  std::vector<std::string> pending;
  for (const auto& i : *invites)
    if (i.name == name && i.state == "pending") pending.push_back(i.invite_id);
  for (const auto& id : pending) {
    auto revoked = co_await revoke_invite(id);
    if (!revoked) co_return revoked.error();
    if (*revoked) ++counts.invites;
  }
  if (const auto ec = co_await revoke_digests(digests)) co_return ec;
  counts.sessions = digests.size();
  co_return counts;
}

asio::awaitable<std::error_code> webchat_auth_store::end_session(std::string session_digest) {
  const std::vector<std::string> digests{std::move(session_digest)};
  co_return co_await revoke_digests(digests);
}

asio::awaitable<result<std::vector<bool>>> webchat_auth_store::alive(std::vector<std::string> session_digests) {
  std::vector<bool> out;
  if (session_digests.empty()) co_return out;
  redis::request req;
  for (const auto& d : session_digests) req.push("EXISTS", webchat_session_key(d));
  auto r = co_await conn_.exec(std::move(req));
  if (!r) co_return r.error();
  for (const auto& e : *r) out.push_back(!e.is_integer() || e.integer() != 0);  // an error reply keeps the socket
  co_return out;
}

}  // namespace stargazer::platform
