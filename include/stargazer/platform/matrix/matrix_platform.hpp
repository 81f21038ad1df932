#pragma once
// The Matrix platform (docs/matrix.md): the persona in Matrix rooms through the
// Client-Server API.
//
// Inbound: one /sync long-poll loop per bot account across every gateway process, held
// by a Redis lease (renewed every ttl/3; another process takes over once it lapses). The
// batch's messages are published at most once per event id, and only then is next_batch
// stored (by a script that checks the lease is still ours), so a process killed anywhere
// resumes from the right token with nothing lost and nothing published twice. The first
// start syncs once with timeout=0 and publishes nothing (the bot does not answer history).
// Invites are joined per --matrix-auto-join; encrypted rooms are refused (or left, with a
// notice, when encryption is turned on later) and counted.
//
// Outbound: every event's transaction id derives from the envelope's message key and
// the part number, so a send repeated after a crash is answered by the homeserver with
// the first event id instead of a second message (per access token and device: the
// device id is kept stable).

#include "stargazer/core/service.hpp"
#include "stargazer/platform/matrix/client_api.hpp"
#include "stargazer/platform/matrix/sync_events.hpp"
#include "stargazer/platform/platform_adapter.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace stargazer::bus {
class event_bus;
}
namespace stargazer::metrics {
class registry;
}
namespace stargazer::redis {
class connection;
}

namespace stargazer::platform::matrix {

struct matrix_settings {
  std::string homeserver;    // base URL, e.g. https://matrix.example.org
  std::string user_id;       // @bot:example.org
  std::string access_token;  // or a password:
  std::string password;      // logged in once; the token and device id are kept in Redis
  auto_join join_policy = auto_join::invited_by_allowed;
  std::vector<std::string> allowed_users;  // glob patterns; empty: everyone
  std::string bot_name = "Star";
  std::string node_id;  // this process, as lease holder
  std::chrono::milliseconds lease_ttl{6000};
  std::chrono::milliseconds sync_timeout{30000};
  std::chrono::milliseconds backoff_min{500};
  std::chrono::milliseconds backoff_max{30000};
  std::size_t upload_limit = 50 * 1024 * 1024;
  std::string key_prefix = "sg:matrix";
  client_api_settings api;
};

class matrix_platform final : public platform_adapter {
public:
  matrix_platform(redis::connection& redis, bus::event_bus& bus, matrix_settings settings,
                  metrics::registry* metrics = nullptr);
  ~matrix_platform() override;
  matrix_platform(const matrix_platform&) = delete;
  matrix_platform& operator=(const matrix_platform&) = delete;

  // Not ready while the credentials are refused (M_UNKNOWN_TOKEN) or not yet checked.
  readiness health() const;
  bool holds_sync_lease() const;

  std::string_view name() const override { return "matrix"; }
  task<void> start() override;
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
  task<bool> add_reaction(const std::string& channel_id, const std::string& message_id,
                          const std::string& emoji) override;
  task<void> set_presence(const std::string& text, const std::string& emoji) override;
  task<std::vector<history_message>> fetch_history(const std::string& channel_id, int limit) override;
  task<bool> is_channel_valid(const std::string& channel_id) override;
  task<bool> should_skip_channel_heartbeat(const std::string& channel_id) override;

  struct impl;

private:
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::platform::matrix
