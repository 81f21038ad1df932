#pragma once
// The web chat (docs/webchat.md): browsers open the page served at `/` and talk to the
// bot over a WebSocket at `/webchat/ws` on any gateway. A message frame becomes an
// inbound envelope (platform "webchat", channel = room) after it is stored in the
// message cache; it is addressed when it names the bot (webchat_addressed) or when the
// room has one human (then it is also direct, is_dm). Whatever the bot sends to a room, and every user message, is published
// on `stargazer:webchat:room:{room}`; each gateway holds one pattern subscription and
// forwards those frames to its own sockets in that room, so a reply consumed by one
// gateway reaches browsers on all of them. Files live in Redis for 24 h and are served
// at `/webchat/files/{file_id}/{filename}`.
//
// Sign-in (webchat_auth.hpp): with auth none anyone who reaches the port chats under a
// name they type; with auth invite the WebSocket needs a session cookie from a one-time
// invite link, and the session decides the name, the rooms and the admin flag. The
// WebSocket refuses cross-origin browsers unless their origin is allowed
// (settings.allowed_origins).
//
// Threading: every member is called on the io_context's thread.

#include "stargazer/platform/platform_adapter.hpp"
#include "stargazer/platform/webchat/webchat_auth.hpp"
#include "stargazer/platform/webchat/webchat_protocol.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stargazer::bus {
class event_bus;
}
namespace stargazer::http {
class router;
class http_server;
}  // namespace stargazer::http
namespace stargazer::redis {
class connection;
class subscriber;
}  // namespace stargazer::redis

namespace stargazer::platform {

struct webchat_settings {
  std::string bot_user_id = "star";
  std::string bot_name = "Star";
  // Origins ("scheme://host[:port]") allowed besides the page's own; "*" allows any.
  std::vector<std::string> allowed_origins;
  std::size_t max_frame_bytes =
      16 * 1024;  // larger frames get an error frame (keep below the server's WebSocket limit)
  std::size_t max_text_bytes = 4000;   // message text, UTF-8 bytes
  std::size_t max_name_bytes = 64;     // display name, UTF-8 bytes
  std::size_t max_room_bytes = 32;     // room id: [a-z0-9][a-z0-9_-]*
  std::size_t history_messages = 50;   // sent on join
  std::size_t max_queued_frames = 16;  // frames of one connection waiting to be handled; more get an error
  double messages_per_second = 1.0;  // sustained message rate per connection (token bucket); <= 0: unlimited
  double message_burst = 5.0;        // bucket size
  std::chrono::seconds file_ttl{86400};
  // How often each gateway confirms its connections in the rooms' presence sets; a member
  // not confirmed for three periods (a gateway that died) no longer counts.
  std::chrono::seconds presence_refresh{60};

  // Sign-in (docs/webchat.md, "Sign-in").
  webchat_auth_mode auth = webchat_auth_mode::none;
  std::string admin_key_sha256;  // the invite routes (/webchat/invites, ...) take only this key; empty: 403
  std::string public_url;        // base of invite links (empty: the request's origin); https: Secure cookies
  std::chrono::seconds session_ttl{30 * 86400};
  std::chrono::seconds default_invite_ttl{7 * 86400};
  webchat_invite_limits invite_limits;
  // How often a gateway checks that its sockets' sessions still exist: the bound on how
  // long a revoked or expired session keeps talking when the revocation message was lost.
  std::chrono::milliseconds session_check_interval{2000};
};

inline std::string webchat_room_channel(std::string_view room) {
  return "stargazer:webchat:room:" + std::string(room);
}
inline std::string webchat_file_key(std::string_view file_id) {
  return "webchat:file:" + std::string(file_id);
}
inline std::string webchat_members_key(std::string_view room) {
  return "webchat:members:" + std::string(room);
}

class webchat_platform final : public platform_adapter {
 public:
  // `fanout` is a Pub/Sub connection of this platform's own (its handler is taken over).
  webchat_platform(redis::connection& conn, bus::event_bus& bus, redis::subscriber& fanout,
                   webchat_settings settings = {});
  ~webchat_platform() override;
  webchat_platform(const webchat_platform&) = delete;
  webchat_platform& operator=(const webchat_platform&) = delete;

  // GET / and GET /webchat/signin (the page), GET /webchat/{asset}, GET
  // /webchat/files/{file_id}/{filename}, the WebSocket endpoint /webchat/ws, the session
  // routes (GET, POST, DELETE /webchat/session) and the admin routes (/webchat/invites,
  // /webchat/sessions, /webchat/users/{name}).
  void add_routes(http::router& routes, http::http_server& server);

  // Browsers connected to this process, in all rooms.
  std::size_t connections() const;

  // platform_adapter
  std::string_view name() const override { return "webchat"; }
  // Subscribes to the room pattern (in the background: the subscription is recorded at
  // once and re-sent on every reconnect, so start does not wait for Redis).
  task<void> start() override;
  // Closes the sockets of this process.
  task<void> stop() override;
  bool is_running() const override;
  bot_identity identity() const override;
  task<result<std::string>> send(const std::string& channel_id, const std::string& text,
                                 const send_context& ctx) override;
  task<result<std::string>> send_file(const std::string& channel_id, const std::string& data,
                                      const std::string& filename, const std::string& mimetype,
                                      const send_context& ctx) override;
  task<result<std::string>> send_with_buttons(const std::string& channel_id, const std::string& text,
                                              const std::vector<bus::button>& buttons,
                                              const send_context& ctx) override;
  task<void> start_typing(const std::string& channel_id) override;
  task<void> stop_typing(const std::string& channel_id) override;
  task<bool> add_reaction(const std::string&, const std::string&, const std::string&) override {
    co_return false;
  }
  task<void> set_presence(const std::string&, const std::string&) override { co_return; }
  task<std::vector<history_message>> fetch_history(const std::string&, int) override {
    co_return std::vector<history_message>{};  // the message cache is the history, as on the Redis platform
  }
  task<bool> is_channel_valid(const std::string& channel_id) override;
  task<bool> should_skip_channel_heartbeat(const std::string&) override { co_return true; }
  // Ends the turn's typing indicator (every inbound message carries a response nonce).
  task<void> turn_complete(const std::string& channel_id, const std::string& response_nonce) override;
  bool writes_delivery_marker() const override { return true; }

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::platform
