#pragma once
// The one configuration struct of the process and its defaults. roles/options.hpp fills
// it from (highest precedence first) command-line flags, SG_* environment variables and
// the TOML file named by --config / SG_CONFIG, and validates it before any I/O.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace stargazer {

enum class role { gateway, worker, tools, standalone };

std::string_view to_string(role r);

struct config {
  role process_role = role::standalone;
  std::string config_file;

  // Redis. Empty URL: standalone starts its own redis-server; other roles use
  // redis://127.0.0.1:6379.
  std::string redis_url;
  std::vector<std::string> redis_sentinels;  // host:port, host:port, ...
  std::string redis_sentinel_master = "mymaster";
  std::string redis_tls_ca_file;  // empty: the system's CA store
  bool redis_tls_verify = true;

  // HTTP server (gateway and standalone).
  std::string http_host = "127.0.0.1";
  std::uint16_t http_port = 8080;
  std::size_t http_max_body_bytes = 16 * 1024 * 1024;
  // Seconds from connecting, or from a kept-alive request's first byte, to the end of the
  // request's headers (the keep-alive wait before that first byte is separate).
  double http_header_timeout_seconds = 10.0;
  std::size_t http_max_connections_per_ip = 64;   // 0: no cap
  std::vector<std::string> http_trusted_proxies;  // IPs and CIDRs whose X-Forwarded-For is believed
  // Worker and tools roles: port for /healthz, /readyz and /metrics on --http-host (0: none).
  std::uint16_t health_port = 0;

  // Web chat (gateway and standalone): the page at `/` and its WebSocket.
  bool webchat_enabled = true;
  // Origins (scheme://host[:port]) whose pages may open the WebSocket besides the page's
  // own; "*" allows any.
  std::vector<std::string> webchat_allowed_origins;
  // Web chat sign-in (docs/webchat.md, "Sign-in"): none (anyone who reaches the page, under
  // a name they type), invite (a session from a one-time link made by `stargazer webchat
  // invite`) or auto: none when --http-host is a loopback address, invite otherwise.
  std::string webchat_auth = "auto";
  double webchat_session_ttl_seconds = 30 * 86400.0;  // how long a sign-in lasts
  // The URL browsers reach the gateway at (https://chat.example.com): the base of invite
  // links (empty: the address the invite was asked for at), and https marks session cookies Secure.
  std::string public_url;

  // Only this machine can connect: 127.0.0.0/8, ::1 or localhost.
  bool http_host_is_loopback() const {
    const std::string_view h = http_host;
    if (h == "localhost" || h == "::1" || h == "[::1]") return true;
    return h.starts_with("127.") && h.find_first_not_of("0123456789.") == std::string_view::npos;
  }
  std::string effective_webchat_auth() const {
    if (webchat_auth != "auto") return webchat_auth;
    return http_host_is_loopback() ? "none" : "invite";
  }

  // Discord (gateway and standalone): on when a token is set (docs/discord.md).
  std::string discord_token;  // secret
  std::string discord_intents = "guilds,guild_messages,message_content,direct_messages,guild_message_reactions";
  std::string discord_shards = "auto";  // auto (GET /gateway/bot's count) or a number
  std::string discord_api_url = "https://discord.com/api/v10";
  std::string discord_gateway_url;  // empty: the URL GET /gateway/bot returns
  bool discord_allow_bots = false;   // answer other bots (never the bot itself)

  // Matrix (gateway and standalone): on when a homeserver and credentials are set (docs/matrix.md).
  std::string matrix_homeserver;     // base URL
  std::string matrix_user_id;        // @bot:example.org
  std::string matrix_access_token;   // secret
  std::string matrix_password;       // secret: logs in once, the token and device id are kept in Redis
  std::string matrix_auto_join = "invited-by-allowed";  // off | invited-by-allowed | all
  std::vector<std::string> matrix_allowed_users;         // glob patterns (@*:example.org); empty: everyone

  // Process.
  std::string data_dir = "./stargazer-data";
  std::string log_level = "info";
  std::string log_format = "text";
  // This process's name: its consumer name in every group, the leader lease holder, the
  // tools worker id. Generated (<hostname>-<random>) when empty.
  std::string node_id;
  double shutdown_timeout_seconds = 10.0;

  // Event bus.
  std::uint64_t stream_maxlen = 100'000;

  // LLM.
  // auto: openai when an API key is configured, else the offline echo model.
  std::string llm_provider = "auto";  // auto | echo | openai
  std::string llm_base_url = "https://openrouter.ai/api/v1";
  std::string llm_model = "openai/gpt-4o-mini";
  double llm_temperature = 0.7;
  int llm_max_tokens = 1024;
  double llm_top_p = 1.0;
  double llm_connect_timeout_seconds = 10.0;
  double llm_timeout_seconds = 120.0;  // whole response, per attempt
  int llm_max_retries = 3;             // on 429 and 5xx
  int llm_echo_delay_ms = 0;           // echo provider: simulated model latency

  // Message processor (worker).
  std::string bot_name = "Star";
  std::string system_prompt_file;  // empty: the built-in template
  int history_messages = 20;       // earlier messages of the channel given to the model
  int history_keep = 1000;         // messages kept per channel in Redis (older ones deleted; 0: all, for 90 days)
  int max_tool_rounds = 5;         // LLM calls per turn that may ask for tools
  int typing_delay_ms = 250;       // typing indicator only for turns slower than this (0: at once)
  double presence_interval_seconds = 300.0;  // the status leader's presence updates (0: off)
  // The status when the model writes none ({bot_name} is replaced); the model's own comes
  // from a <dstatus> tag.
  std::string presence_text = "Chatting as {bot_name}";

  // Group chats (worker; docs/architecture.md, "Group chats").
  // Messages not addressed to the bot: a policy (addressed, triage or always) and
  // per-platform overrides, e.g. "triage,webchat=always,redis=addressed".
  std::string reply_policy = "triage";
  std::string triage_model;       // empty: llm_model
  int triage_max_tokens = 5;
  double unprompted_cooldown_seconds = 120.0;  // per channel, after an unprompted reply
  std::string command_prefix = "!";            // !help, !forget, !mode, !quiet
  std::vector<std::string> admin_roles;        // role ids whose members may use !mode and !quiet
  std::vector<std::string> webchat_admins;     // web chat user ids that may
  double heartbeat_initial_delay_seconds = 120.0;
  double heartbeat_interval_seconds = 86400.0;  // 0: off
  double heartbeat_quiet_seconds = 21600.0;     // channels with a newer message are left alone

  // Quotas (docs/operations.md, "Quotas and usage"), shared by every gateway and worker
  // through Redis. Rates are N/period (20/min, 600/h); empty: off.
  std::string rate_user;      // turns per user
  std::string rate_instance;  // turns per Redis-platform instance, or per channel elsewhere
  std::uint64_t budget_instance_tokens = 0;  // prompt + completion tokens per instance (channel) per UTC day; 0: off

  // Tools.
  std::string tools_mode = "in_process";  // in_process | remote (the tools role runs them)
  std::string tool_permissions;           // JSON: {"tool" or "*": {"allow_platforms": [...], "deny_users": [...]}}
  double tool_timeout_seconds = 10.0;     // per tool call
  // MCP servers whose tools the persona uses (docs/tools.md), as JSON: {"name": {"command":
  // ..., "args": [...], "env": [...], "cwd": ...} | {"url": ..., "headers": {...}}}; in the
  // config file also as [mcp-servers.NAME] tables.
  std::string mcp_servers;

  // The provider actually used once `auto` is resolved.
  std::string effective_llm_provider() const {
    if (llm_provider != "auto") return llm_provider;
    return llm_api_key.empty() ? "echo" : "openai";
  }

  // Secrets: never printed. admin_api_key may also come from a flag (operators script it);
  // llm_api_key only from SG_LLM_API_KEY or the config file.
  std::string admin_api_key;
  std::string llm_api_key;

  // The arguments this configuration was parsed from (argv[1..]): a config reload parses
  // them again, so flags and the environment keep their precedence over the file.
  std::vector<std::string> command_line;

  std::chrono::milliseconds shutdown_timeout() const {
    return std::chrono::milliseconds(static_cast<std::int64_t>(shutdown_timeout_seconds * 1000));
  }
};

}  // namespace stargazer
