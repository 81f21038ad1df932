#pragma once
// The Matrix Client-Server API (v1.x, /_matrix/client/v3, authenticated media under
// /_matrix/client/v1/media) for one homeserver and one account: the HTTP calls the Matrix
// adapter makes. No bus, no Redis, no decoding of /sync (sync_events.hpp does that).
//
// Results. Every call returns api_result<T> = std::variant<T, api_error>: the value on a
// 2xx answer that has the expected shape, else an api_error:
//   - status 0: a transport failure (connection refused, reset, TLS, a deadline passed:
//     "timeout"), the message says which;
//   - a non-2xx status: errcode/message from the Matrix error body {"errcode","error"}, or
//     errcode "" and a short excerpt of the body when it is not Matrix JSON;
//   - a 2xx status whose body lacks what the call needs (not JSON, a field missing or of
//     the wrong type): errcode "" and a message starting "malformed response".
// 429 M_LIMIT_EXCEEDED carries retry_after, from the body's retry_after_ms or else the
// Retry-After header. send_event() waits out 429s itself (client_api_settings::
// send_429_retries, each wait capped by max_retry_wait); every other call returns the 429.
//
// Authentication: the access token goes in "Authorization: Bearer" only, never in the
// deprecated access_token query parameter. Path segments (room ids with '!' and ':', event
// types, transaction ids, user ids) are percent-encoded.
//
// Threading and lifetime as http::client: call on the executor's thread; calls may overlap;
// the object may be destroyed while calls are in flight (they keep its state alive).
// Coroutine parameters are taken by value, so temporaries may be passed.

#include "stargazer/http/client.hpp"

#include <utility>  // before Asio: 1.18's awaitable.hpp uses std::exchange
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>

namespace stargazer::platform::matrix {

struct api_error {
  unsigned status = 0;       // the HTTP status; 0 for a transport failure
  std::string errcode;       // "M_FORBIDDEN", ...; "" when the body was not a Matrix error
  std::string message;       // the body's "error", an excerpt of a non-Matrix body, or the transport error
  std::optional<std::chrono::milliseconds> retry_after;  // 429: how long the server asks to wait

  // "429 M_LIMIT_EXCEEDED: Too many requests" / "transport: Connection refused" (for logs).
  std::string to_string() const;
};

template <class T>
using api_result = std::variant<T, api_error>;

// For calls that return nothing on success.
using api_void = std::monostate;

template <class T>
bool ok(const api_result<T>& r) {
  return r.index() == 0;
}
template <class T>
const api_error& error_of(const api_result<T>& r) {
  return std::get<api_error>(r);
}

// The access token is unknown, revoked or missing (401 M_UNKNOWN_TOKEN / M_MISSING_TOKEN):
// log in again. Other 401s and 403s are not.
bool is_auth_failure(const api_error& e);
// 429 (M_LIMIT_EXCEEDED or any other errcode).
bool is_rate_limited(const api_error& e);
// No HTTP answer at all (status 0).
bool is_transport_error(const api_error& e);

struct client_api_settings {
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds response_timeout{30'000};  // every call but sync()
  // sync(): the whole-response deadline is timeout_ms plus this (the long poll itself
  // must not count against the deadline).
  std::chrono::milliseconds sync_grace{15'000};
  std::size_t max_response_bytes = 32 * 1024 * 1024;   // also caps download()
  std::string user_agent = "stargazer";
  bool tls_verify = true;
  std::string tls_ca_file;                             // "" : the system store
  // send_event(): a 429 is waited out and the send retried, up to this many times (0: the
  // 429 goes to the caller). The same transaction id is sent again, so a retry can never
  // post twice.
  int send_429_retries = 5;
  std::chrono::milliseconds max_retry_wait{30'000};    // cap on one wait
  std::chrono::milliseconds default_retry_wait{1'000}; // a 429 that names no delay
};

struct login_result {
  std::string access_token;
  std::string device_id;
  std::string user_id;
};

struct whoami_result {
  std::string user_id;
  std::string device_id;  // "" when the server does not say (appservice tokens)
};

struct downloaded_media {
  std::string data;
  std::string content_type;  // the response's Content-Type ("" when absent)
};

class client_api {
public:
  // `homeserver_url`: "https://matrix.example.org" (a base URL: http[s]://host[:port][/path]).
  // Throws std::invalid_argument for a bad URL, std::system_error when TLS cannot be set up.
  client_api(boost::asio::any_io_executor ex, const std::string& homeserver_url, client_api_settings settings = {});
  ~client_api();
  client_api(const client_api&) = delete;
  client_api& operator=(const client_api&) = delete;

  void set_access_token(std::string token);
  const std::string& access_token() const;

  // POST /login, m.login.password with identifier m.id.user (`user`: a localpart or a
  // full @user:server). A non-empty `device_id` is sent so the device (and its
  // transaction ids) stays the same across logins. On success the token is also set on
  // this client.
  boost::asio::awaitable<api_result<login_result>> login_password(std::string user, std::string password,
                                                                  std::string device_id = {});

  // GET /account/whoami.
  boost::asio::awaitable<api_result<whoami_result>> whoami();

  // POST /user/{userId}/filter → the filter id. `filter_json` is sent as is (see
  // sync_filter_json()).
  boost::asio::awaitable<api_result<std::string>> upload_filter(std::string user_id, std::string filter_json);

  // GET /sync → the raw body, for decode_sync(). `since` "" for an initial sync;
  // `filter_id` "" for none (a filter id, or inline JSON starting with '{'). The response
  // deadline is timeout + settings.sync_grace. Bodies up to max_response_bytes.
  boost::asio::awaitable<api_result<std::string>> sync(std::string since, std::string filter_id,
                                                       std::chrono::milliseconds timeout, bool full_state = false);

  // PUT /rooms/{roomId}/send/{eventType}/{txnId} → the event id. `content_json` is the
  // event content (a JSON object). 429s are waited out (send_429_retries).
  boost::asio::awaitable<api_result<std::string>> send_event(std::string room_id, std::string event_type,
                                                             std::string txn_id, std::string content_json);

  // PUT /rooms/{roomId}/typing/{userId}; `timeout` only matters when typing.
  boost::asio::awaitable<api_result<api_void>> set_typing(std::string room_id, std::string user_id, bool typing,
                                                          std::chrono::milliseconds timeout = std::chrono::seconds(30));

  // POST /rooms/{roomId}/receipt/m.read/{eventId}.
  boost::asio::awaitable<api_result<api_void>> send_receipt(std::string room_id, std::string event_id);

  // PUT /presence/{userId}/status. `presence`: online, unavailable or offline; an empty
  // `status_msg` is not sent.
  boost::asio::awaitable<api_result<api_void>> set_presence(std::string user_id, std::string status_msg,
                                                            std::string presence = "online");

  // POST /join/{roomIdOrAlias} → the room id joined.
  boost::asio::awaitable<api_result<std::string>> join(std::string room_id_or_alias);

  // POST /rooms/{roomId}/leave.
  boost::asio::awaitable<api_result<api_void>> leave(std::string room_id);

  // GET /rooms/{roomId}/joined_members → user id → display name ("" when unset).
  boost::asio::awaitable<api_result<std::map<std::string, std::string>>> joined_members(std::string room_id);

  // GET /rooms/{roomId}/state/{eventType}/{stateKey} → the content as JSON text.
  boost::asio::awaitable<api_result<std::string>> room_state(std::string room_id, std::string event_type,
                                                             std::string state_key = {});

  // GET /rooms/{roomId}/messages → the raw body ({start, chunk, end?, state?}). `from` ""
  // to start at the live end (dir b) or the beginning (dir f); `dir` "b" or "f";
  // `filter_json` "" for none (a RoomEventFilter as JSON).
  boost::asio::awaitable<api_result<std::string>> messages(std::string room_id, std::string from,
                                                           std::string dir = "b", int limit = 10,
                                                           std::string filter_json = {});

  // POST /_matrix/media/v3/upload?filename= → the mxc:// URI.
  boost::asio::awaitable<api_result<std::string>> upload(std::string data, std::string filename,
                                                         std::string content_type);

  // GET /_matrix/client/v1/media/download/{serverName}/{mediaId} (authenticated media).
  // A URI parse_mxc() refuses → api_error{0, "", "not an mxc URI"}; a body over
  // `max_bytes` (or over settings.max_response_bytes, whichever is smaller) → api_error
  // with status 0 and a message saying so.
  boost::asio::awaitable<api_result<downloaded_media>> download(std::string mxc_uri, std::size_t max_bytes);

  const client_api_settings& settings() const;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::platform::matrix
