#pragma once
// One person, several accounts: a unified user id links accounts of several platforms
// ("discord:123", "matrix:@ada:example.org", "webchat:browser-0001"), so the worker can name
// the sender consistently across platforms (the envelope's `unified_user_id` and
// `user_aliases`). Operators link and unlink with `stargazer identity ...` or the REST
// admin routes (docs/rest-api.md, "Identities").
//
// Keys (docs/protocol.md §5.9): `sg:identity:user:{platform}:{user_id}` (string: the
// unified id) and `sg:identity:unified:{unified_id}` (set of the accounts). Every write is
// one Lua script, so the two never disagree; the scripts derive the set keys from the ids
// they read (one Redis server or a Sentinel group, not Redis Cluster).

#include "stargazer/core/result.hpp"

#include <utility>  // before Asio: 1.18's awaitable.hpp uses std::exchange
#include <boost/asio/awaitable.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stargazer::redis {
class connection;
}

namespace stargazer::platform {

// ---- names (pure) ----------------------------------------------------------------------

// "platform:user_id", split at the first ':'. The platform is 1-32 characters of
// [a-z0-9_-]; the user id 1-256 bytes without spaces or control characters (it may hold
// ':' and '@': "matrix:@ada:example.org").
struct account {
  std::string platform;
  std::string user_id;
  std::string text() const { return platform + ":" + user_id; }
};
std::optional<account> parse_account(std::string_view text);

// 1-64 characters of [A-Za-z0-9._-], not "." or "..": never contains ':', so a name is an
// account or a unified id, never both.
bool valid_unified_id(std::string_view id);

inline std::string identity_user_key(std::string_view platform, std::string_view user_id) {
  return "sg:identity:user:" + std::string(platform) + ":" + std::string(user_id);
}
inline std::string identity_unified_key(std::string_view unified_id) {
  return "sg:identity:unified:" + std::string(unified_id);
}

// ---- the store -------------------------------------------------------------------------

struct unified_identity {
  std::string unified_id;
  std::vector<std::string> accounts;  // "platform:user_id", sorted
};

struct identity_limits {
  std::size_t max_accounts_per_link = 16;    // accounts named by one link request
  std::size_t max_accounts_per_person = 64;  // accounts one unified id may hold
};

struct link_request {
  std::vector<account> accounts;  // at least one
  std::string unified_id;         // empty: the accounts' current id, or a new one
  // Accounts of different unified ids: merge those ids into one (every account of each
  // moves) instead of refusing.
  bool merge = false;
};

struct link_outcome {
  enum class status { linked, conflict, too_many_accounts } what = status::linked;
  unified_identity identity;               // linked: the person after the link
  bool created = false;                    // linked: the unified id is new
  std::vector<std::string> merged_ids;     // linked with merge: ids that were merged away
  std::vector<std::pair<std::string, std::string>> conflicts;  // conflict: account → its current id
  std::size_t accounts_after = 0;          // too_many_accounts: how many the person would hold
};

// Links the accounts to one unified id, atomically. The target is `unified_id` when given,
// else the one id the accounts already share, else a new random id (16 hex digits).
// Accounts that belong to another id than the target are a conflict unless `merge`.
boost::asio::awaitable<result<link_outcome>> link_identity(redis::connection& conn, link_request req,
                                                           identity_limits limits = {});

// Removes one account from its unified id: the id it had, nullopt when it had none. The
// unified id disappears with its last account.
boost::asio::awaitable<result<std::optional<std::string>>> unlink_identity(redis::connection& conn,
                                                                           account who);

// The person an account belongs to, nullopt when it is linked to none. One round trip (a
// script): the worker calls this for every inbound message.
boost::asio::awaitable<result<std::optional<unified_identity>>> resolve_identity(redis::connection& conn,
                                                                                 std::string platform,
                                                                                 std::string user_id);

// The person with this unified id, nullopt when it has no accounts.
boost::asio::awaitable<result<std::optional<unified_identity>>> identity_by_id(redis::connection& conn,
                                                                               std::string unified_id);

// The other accounts of the person: `identity.accounts` without the sender's own (the
// envelope's `user_aliases`).
std::vector<std::string> aliases_of(const unified_identity& identity, std::string_view platform,
                                    std::string_view user_id);

}  // namespace stargazer::platform
