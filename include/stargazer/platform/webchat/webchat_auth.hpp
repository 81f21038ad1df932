#pragma once
// Web chat sign-in (docs/webchat.md, "Sign-in"). With `--webchat-auth invite` an operator
// makes one-time links (`stargazer webchat invite`, POST /webchat/invites); the page
// trades a link's token for a session cookie bound to the invite's name, rooms and admin
// flag, so nobody chooses who they are. Redis holds only SHA-256 digests of the random
// tokens (as the keys' suffixes, with TTLs); the raw token lives only in the link and in
// the cookie. Revoking a session deletes its key and publishes its digest on
// webchat_revoked_channel, which every gateway turns into closing that session's sockets.
//
// The pure helpers are in webchat_auth_rules.hpp; this is the Redis side.

#include "stargazer/core/result.hpp"
#include "stargazer/platform/webchat/webchat_auth_rules.hpp"

#include <utility>  // before Asio: 1.18's awaitable.hpp uses std::exchange
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace stargazer::redis {
class connection;
}

namespace stargazer::platform {

// A fresh secret: 256 random bits as 64 lowercase hex digits.
std::string new_webchat_token();

// The Redis side: invites, sessions, revocations. All timestamps are unix seconds.
class webchat_auth_store {
 public:
  // `tombstone`: how long a used, revoked or expired invite is kept, so that opening its
  // link again says what happened to it instead of "unknown".
  explicit webchat_auth_store(redis::connection& conn, std::chrono::seconds tombstone = std::chrono::hours(24 * 7));

  struct invite_request {
    std::string name;  // checked by the caller
    std::vector<std::string> rooms;
    bool admin = false;
    std::chrono::seconds ttl{7 * 86400};
  };
  struct created_invite {
    webchat_invite invite;
    std::string token;  // the link's secret, returned once
  };
  boost::asio::awaitable<result<created_invite>> create_invite(const invite_request& r);
  // Every invite still remembered (pending first, then by expiry).
  boost::asio::awaitable<result<std::vector<webchat_invite>>> list_invites();

  enum class redeem_refusal { none, unknown, used, revoked, expired };
  struct redeemed {
    redeem_refusal refusal = redeem_refusal::none;
    webchat_identity identity;  // refusal none
    std::string token;          // the session cookie's secret (refusal none)
  };
  // Turns a pending invite into a session, atomically (a link works once whichever
  // gateway is asked, however many ask at once).
  boost::asio::awaitable<result<redeemed>> redeem(std::string invite_token, std::chrono::seconds session_ttl);

  // The session a cookie's token opens; nullopt when it expired, was revoked or never was.
  boost::asio::awaitable<result<std::optional<webchat_identity>>> session(std::string token);
  boost::asio::awaitable<result<std::vector<webchat_identity>>> list_sessions();

  // Each returns what it revoked (nullopt: no such session or invite). Revoking an invite
  // also revokes the session it opened.
  boost::asio::awaitable<result<std::optional<webchat_identity>>> revoke_session(std::string session_id);
  boost::asio::awaitable<result<std::optional<webchat_invite>>> revoke_invite(std::string invite_id);
  struct revoked_counts {
    std::size_t sessions = 0;
    std::size_t invites = 0;  // pending ones
  };
  // Every session and pending invite of that name.
  boost::asio::awaitable<result<revoked_counts>> revoke_name(std::string name);
  // Sign-out: ends the session of this digest.
  boost::asio::awaitable<std::error_code> end_session(std::string session_digest);

  // Which of these session digests still have their key (false: expired or revoked).
  boost::asio::awaitable<result<std::vector<bool>>> alive(std::vector<std::string> session_digests);

 private:
  boost::asio::awaitable<std::error_code> revoke_digests(const std::vector<std::string>& session_digests);

  redis::connection& conn_;
  std::chrono::seconds tombstone_;
};

}  // namespace stargazer::platform
