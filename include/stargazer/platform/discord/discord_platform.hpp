#pragma once
// The Discord platform (docs/discord.md): the persona in Discord servers and DMs.
//
// Inbound: the gateway's MESSAGE_CREATE, MESSAGE_REACTION_ADD and button clicks
// (INTERACTION_CREATE, acknowledged at once with a deferred update) become inbound
// envelopes, published at most once per Discord id (a dispatch replayed after a resume is
// not published twice), with is_addressed set for DMs, mentions, replies to the bot and
// its name as a word. The bot's own messages, and other bots' unless allowed, are ignored.
//
// Outbound: REST (rest.hpp: rate limits shared through Redis). Every message carries a
// nonce derived from the envelope's message key with enforce_nonce, so a send repeated
// after a crash returns the message Discord already created instead of posting it again.
//
// Shards: each is held by exactly one gateway process through a Redis lease (renewed,
// released on stop, taken over by another process once it lapses); the resume state
// (session id, sequence, resume URL) is in Redis, so the process that takes a shard over
// resumes the session and Discord replays what was missed.

#include "stargazer/core/service.hpp"
#include "stargazer/platform/discord/gateway_protocol.hpp"
#include "stargazer/platform/platform_adapter.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace stargazer::bus {
class event_bus;
}
namespace stargazer::metrics {
class registry;
}
namespace stargazer::redis {
class connection;
}

namespace stargazer::platform::discord {

struct discord_settings {
  std::string token;
  std::uint32_t intents = default_intents;
  int shards = 0;  // 0: as many as GET /gateway/bot recommends
  std::string api_url = "https://discord.com/api/v10";
  std::string gateway_url;  // empty: the URL GET /gateway/bot returns
  bool allow_bots = false;  // answer other bots' messages (never the bot's own)
  std::string bot_name = "Star";  // addressed when the text names it as a word
  std::string node_id;            // this process, as lease holder
  std::size_t upload_limit = 10 * 1024 * 1024;  // larger files become a text message
  std::chrono::milliseconds lease_ttl{6000};    // a dead holder's shards are taken over within ttl + ttl/3
  bool compress = true;                         // zlib-stream
  int global_requests_per_second = 50;
  std::chrono::milliseconds backoff_min{1000};
  std::string key_prefix = "sg:discord";
};

class discord_platform final : public platform_adapter {
public:
  discord_platform(redis::connection& redis, bus::event_bus& bus, discord_settings settings,
                   metrics::registry* metrics = nullptr);
  ~discord_platform() override;
  discord_platform(const discord_platform&) = delete;
  discord_platform& operator=(const discord_platform&) = delete;

  // Ready while no shard hit a fatal close (and the gateway's parameters were read).
  readiness health() const;
  // Shards this process holds now.
  std::vector<int> owned_shards() const;

  std::string_view name() const override { return "discord"; }
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

// Pure helpers (unit-tested).
// The nonce of part `part` of a send: 25 characters derived from the message key.
std::string message_nonce(std::string_view message_key, std::size_t part);
// "2026-12-02T01:02:03.456000+00:00" → unix seconds (0 when unreadable).
double parse_timestamp(std::string_view iso);
// An emoji for a reaction route: unicode percent-encoded, custom "name:id" kept.
std::string reaction_path_segment(std::string_view emoji);

}  // namespace stargazer::platform::discord
