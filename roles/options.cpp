#include "options.hpp"

#include "stargazer/core/json_value.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/http/base_url.hpp"
#include "stargazer/http/trusted_proxies.hpp"
#include "stargazer/platform/discord/gateway_protocol.hpp"
#include "stargazer/platform/matrix/sync_events.hpp"
#include "stargazer/platform/quota_rules.hpp"
#include "stargazer/platform/webchat/webchat_auth_rules.hpp"
#include "stargazer/redis/url.hpp"
#include "stargazer/tools/mcp/protocol.hpp"
#include "stargazer/tools/permissions.hpp"
#include "stargazer/worker/group_chat_rules.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <map>
#include <cstdlib>
#include <ostream>
#include <random>
#include <sstream>

namespace stargazer {
namespace {

std::string normalize_key(std::string key) {
  for (auto& c : key)
    if (c == '_') c = '-';
  return key;
}

std::string config_path_from(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--config" && i + 1 < argc) return argv[i + 1];
    if (arg.starts_with("--config=")) return std::string(arg.substr(9));
  }
  if (const char* env = std::getenv("SG_CONFIG"); env != nullptr) return env;
  return {};
}

std::string generate_node_id() {
  std::array<char, 256> host{};
  if (gethostname(host.data(), host.size() - 1) != 0) host = {'s', 'g'};
  std::random_device rd;
  return fmt::format("{}-{:08x}", host.data(), rd());
}

struct bad_value : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void validate(config& cfg) {
  if (!log::parse_level(cfg.log_level))
    throw bad_value(fmt::format("--log-level: '{}' is not one of trace, debug, info, warn, error, off", cfg.log_level));
  if (!log::parse_format(cfg.log_format))
    throw bad_value(fmt::format("--log-format: '{}' is not one of text, json", cfg.log_format));
  if (!cfg.redis_url.empty()) {
    std::string error;
    if (!redis::parse_url(cfg.redis_url, &error))
      throw bad_value(fmt::format("--redis-url: {}", error));
  }
  for (const auto& s : cfg.redis_sentinels) {
    const auto colon = s.rfind(':');
    unsigned port = 0;
    const auto parsed = colon == std::string::npos ? std::from_chars_result{}
                                                   : std::from_chars(s.data() + colon + 1, s.data() + s.size(), port);
    // The whole rest must be the port: "host:26379x" is refused, not read as port 26379.
    // A host is printable and without spaces (a control byte could not be a name, and would
    // not survive `config print`).
    const bool printable_host = std::all_of(s.begin(), s.begin() + (colon == std::string::npos ? 0 : colon),
                                            [](unsigned char c) { return c > 0x20 && c < 0x7f; });
    if (colon == std::string::npos || colon == 0 || !printable_host || parsed.ec != std::errc{} ||
        parsed.ptr != s.data() + s.size() || port == 0 || port > 65535)
      throw bad_value(fmt::format("--redis-sentinels: '{}' is not host:port", s));
  }
  if (std::string error; !http::trusted_proxies::parse(cfg.http_trusted_proxies, &error))
    throw bad_value(fmt::format("--http-trusted-proxies: {}", error));
  for (const auto& o : cfg.webchat_allowed_origins) {
    const auto rest = o.starts_with("http://") ? o.substr(7) : o.starts_with("https://") ? o.substr(8) : std::string();
    if (o != "*" && (rest.empty() || rest.find_first_of("/?# \t") != std::string::npos))
      throw bad_value(fmt::format("--webchat-allowed-origins: '{}' is not '*' or scheme://host[:port]", o));
  }
  // Without sign-in anyone who reaches the port speaks under any name: only loopback may.
  if (cfg.webchat_enabled && cfg.webchat_auth == "none" && !cfg.http_host_is_loopback())
    throw bad_value(fmt::format("--webchat-auth: none is refused with --http-host {} (not a loopback address): "
                                "anyone who reaches it could chat under any name; use invite",
                                cfg.http_host));
  if (!cfg.public_url.empty()) {
    std::string error;
    const auto url = http::parse_base_url(cfg.public_url, &error);
    if (!url) throw bad_value(fmt::format("--public-url: {}", error));
  }
  if (std::string error; !platform::discord::parse_intents(cfg.discord_intents, &error))
    throw bad_value(fmt::format("--discord-intents: {}", error));
  if (cfg.discord_shards != "auto") {
    int shards = 0;
    const auto& s = cfg.discord_shards;
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), shards);
    if (ec != std::errc{} || ptr != s.data() + s.size() || shards < 1 || shards > 4096)
      throw bad_value(fmt::format("--discord-shards: '{}' is not auto or a number of shards (1-4096)", s));
  }
  if (std::string error; !http::parse_base_url(cfg.discord_api_url, &error))
    throw bad_value(fmt::format("--discord-api-url: {}", error));
  if (const auto& g = cfg.discord_gateway_url; !g.empty() && !g.starts_with("ws://") && !g.starts_with("wss://"))
    throw bad_value(fmt::format("--discord-gateway-url: '{}' is not a ws:// or wss:// URL", g));
  if (cfg.discord_token.find_first_of(" \t\r\n") != std::string::npos)
    throw bad_value("--discord-token: a token has no whitespace");
  if (!cfg.matrix_homeserver.empty()) {
    if (std::string error; !http::parse_base_url(cfg.matrix_homeserver, &error))
      throw bad_value(fmt::format("--matrix-homeserver: {}", error));
    const auto& u = cfg.matrix_user_id;
    if (u.size() < 4 || u[0] != '@' || u.find(':') == std::string::npos || u.find_first_of(" \t\r\n/") != std::string::npos)
      throw bad_value(fmt::format("--matrix-user-id: '{}' is not a Matrix user id like @bot:example.org", u));
    if (cfg.matrix_access_token.empty() && cfg.matrix_password.empty())
      throw bad_value("--matrix-access-token or --matrix-password: one is needed with --matrix-homeserver");
  }
  if (std::string error; !platform::matrix::parse_auto_join(cfg.matrix_auto_join, &error))
    throw bad_value(fmt::format("--matrix-auto-join: {}", error));
  if (!cfg.redis_sentinels.empty() && cfg.redis_sentinel_master.empty())
    throw bad_value("--redis-sentinel-master: must not be empty when sentinels are given");
  if (cfg.llm_provider != "auto" && cfg.llm_provider != "echo" && cfg.llm_provider != "openai")
    throw bad_value(fmt::format("--llm-provider: '{}' is not one of auto, echo, openai", cfg.llm_provider));
  if (cfg.effective_llm_provider() == "openai" && !cfg.llm_base_url.starts_with("http://") &&
      !cfg.llm_base_url.starts_with("https://"))
    throw bad_value(fmt::format("--llm-base-url: '{}' is not an http:// or https:// URL", cfg.llm_base_url));
  if (cfg.tools_mode != "in_process" && cfg.tools_mode != "remote")
    throw bad_value(fmt::format("--tools-mode: '{}' is not one of in_process, remote", cfg.tools_mode));
  if (auto rules = tools::parse_permissions(cfg.tool_permissions); std::holds_alternative<std::string>(rules))
    throw bad_value(std::get<std::string>(rules));
  if (auto servers = tools::mcp::parse_server_configs(cfg.mcp_servers); std::holds_alternative<std::string>(servers))
    throw bad_value(std::get<std::string>(servers));
  if (auto spec = worker::parse_reply_policy_spec(cfg.reply_policy); std::holds_alternative<std::string>(spec))
    throw bad_value(fmt::format("--reply-policy: {}", std::get<std::string>(spec)));
  const auto names_ok = [](const std::vector<std::string>& names) {
    const auto printable = [](unsigned char c) { return c > 0x20 && c != 0x7f; };
    return std::all_of(names.begin(), names.end(), [&](const std::string& n) {
      return !n.empty() && n.size() <= 128 && std::all_of(n.begin(), n.end(), printable);
    });
  };
  if (auto r = platform::parse_rate(cfg.rate_user); std::holds_alternative<std::string>(r))
    throw bad_value(fmt::format("--rate-user: {}", std::get<std::string>(r)));
  if (auto r = platform::parse_rate(cfg.rate_instance); std::holds_alternative<std::string>(r))
    throw bad_value(fmt::format("--rate-instance: {}", std::get<std::string>(r)));
  if (!names_ok(cfg.admin_roles))
    throw bad_value("--admin-roles: role ids of 1 to 128 printable characters, no spaces");
  if (!names_ok(cfg.webchat_admins))
    throw bad_value("--webchat-admins: user ids of 1 to 128 printable characters, no spaces");
  if (cfg.node_id.empty()) cfg.node_id = generate_node_id();
  if (cfg.node_id.size() > 128 || cfg.node_id.find_first_of(" \t\r\n") != std::string::npos)
    throw bad_value("--node-id: at most 128 characters, no whitespace");
}

void define_options(CLI::App& app, config& cfg, std::string& role_name, std::string& deprecated_node_id) {
  const auto env = [](CLI::Option* o, const char* name) { return o->envname(name); };
  app.set_version_flag("--version", std::string("stargazer ") + STARGAZER_VERSION);

  env(app.add_option("--role", role_name, "Which components this process runs")
          ->check(CLI::IsMember({"gateway", "worker", "tools", "standalone"}))
          ->capture_default_str(),
      "SG_ROLE");
  env(app.add_option("--config", cfg.config_file, "TOML configuration file (keys are the long option names)"),
      "SG_CONFIG");

  auto redis = "Redis";
  env(app.add_option("--redis-url", cfg.redis_url,
                     "redis://[user:pass@]host[:port][/db], rediss://... (TLS) or unix:///path.sock; "
                     "empty: standalone starts its own redis-server, other roles use redis://127.0.0.1:6379")
          ->group(redis),
      "SG_REDIS_URL");
  env(app.add_option("--redis-sentinels", cfg.redis_sentinels, "Sentinel addresses, host:port[,host:port...]")
          ->delimiter(',')
          ->group(redis),
      "SG_REDIS_SENTINELS");
  env(app.add_option("--redis-sentinel-master", cfg.redis_sentinel_master, "Master name monitored by the sentinels")
          ->capture_default_str()
          ->group(redis),
      "SG_REDIS_SENTINEL_MASTER");
  env(app.add_option("--redis-tls-ca-file", cfg.redis_tls_ca_file, "CA bundle for rediss:// (default: system CAs)")
          ->group(redis),
      "SG_REDIS_TLS_CA_FILE");
  env(app.add_option("--redis-tls-verify", cfg.redis_tls_verify, "Verify the Redis server certificate")
          ->capture_default_str()
          ->group(redis),
      "SG_REDIS_TLS_VERIFY");

  auto http = "HTTP";
  env(app.add_option("--http-host", cfg.http_host, "Address the HTTP server binds")->capture_default_str()->group(http),
      "SG_HTTP_HOST");
  env(app.add_option("--http-port", cfg.http_port, "Port the HTTP server binds (0: any free port)")
          ->capture_default_str()
          ->group(http),
      "SG_HTTP_PORT");
  env(app.add_option("--http-max-body-bytes", cfg.http_max_body_bytes, "Largest accepted request body")
          ->check(CLI::Range(std::size_t{1024}, std::size_t{1} << 30))
          ->capture_default_str()
          ->group(http),
      "SG_HTTP_MAX_BODY_BYTES");
  env(app.add_option("--http-header-timeout", cfg.http_header_timeout_seconds,
                     "Seconds a client has for a request's headers, from connecting or from a kept-alive "
                     "request's first byte; slower connections are closed")
          ->check(CLI::Range(0.1, 3600.0))
          ->capture_default_str()
          ->group(http),
      "SG_HTTP_HEADER_TIMEOUT");
  env(app.add_option("--http-max-connections-per-ip", cfg.http_max_connections_per_ip,
                     "Open connections one client address may hold (0: no cap); one more gets 429")
          ->check(CLI::Range(std::size_t{0}, std::size_t{1'000'000}))
          ->capture_default_str()
          ->group(http),
      "SG_HTTP_MAX_CONNECTIONS_PER_IP");
  env(app.add_option("--http-trusted-proxies", cfg.http_trusted_proxies,
                     "Reverse proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For names the client")
          ->delimiter(',')
          ->group(http),
      "SG_HTTP_TRUSTED_PROXIES");

  auto webchat = "Web chat";
  env(app.add_option("--webchat-enabled", cfg.webchat_enabled,
                     "Serve the web chat page at / and its WebSocket at /webchat/ws (sign-in: --webchat-auth)")
          ->capture_default_str()
          ->group(webchat),
      "SG_WEBCHAT_ENABLED");
  env(app.add_option("--webchat-allowed-origins", cfg.webchat_allowed_origins,
                     "Origins (scheme://host[:port], or *) whose pages may open the web chat WebSocket besides "
                     "the page's own")
          ->delimiter(',')
          ->group(webchat),
      "SG_WEBCHAT_ALLOWED_ORIGINS");
  env(app.add_option("--webchat-auth", cfg.webchat_auth,
                     "Web chat sign-in: invite (one-time links from `stargazer webchat invite`), none (anyone who "
                     "reaches the page, under a name they type; loopback --http-host only) or auto (none on a "
                     "loopback --http-host, invite otherwise)")
          ->check(CLI::IsMember({"auto", "none", "invite"}))
          ->capture_default_str()
          ->group(webchat),
      "SG_WEBCHAT_AUTH");
  env(app.add_option("--webchat-session-ttl", cfg.webchat_session_ttl_seconds,
                     "Seconds a web chat sign-in lasts before the invited person needs a new link")
          ->check(CLI::Range(60.0, 31536000.0))
          ->capture_default_str()
          ->group(webchat),
      "SG_WEBCHAT_SESSION_TTL");
  env(app.add_option("--public-url", cfg.public_url,
                     "The URL browsers reach the gateway at (https://chat.example.com): the base of invite links; "
                     "https marks the web chat's session cookie Secure")
          ->group(webchat),
      "SG_PUBLIC_URL");

  env(app.add_option("--health-port", cfg.health_port,
                     "worker and tools roles: serve /healthz, /readyz and /metrics on this port (0: none)")
          ->group(http),
      "SG_HEALTH_PORT");

  auto process = "Process";
  env(app.add_option("--data-dir", cfg.data_dir, "Directory for embedded Redis data and other state")
          ->capture_default_str()
          ->group(process),
      "SG_DATA_DIR");
  env(app.add_option("--log-level", cfg.log_level, "trace, debug, info, warn, error or off")
          ->capture_default_str()
          ->group(process),
      "SG_LOG_LEVEL");
  env(app.add_option("--log-format", cfg.log_format, "text (for terminals) or json (one object per line)")
          ->capture_default_str()
          ->group(process),
      "SG_LOG_FORMAT");
  env(app.add_option("--node-id", cfg.node_id,
                     "Name of this process: its consumer name in every group, the leader lease holder, the "
                     "tools worker id (default: <hostname>-<random>)")
          ->group(process),
      "SG_NODE_ID");
  // The old name: "instance" means a Redis-platform bot instance everywhere else.
  env(app.add_option("--instance-id", deprecated_node_id, "Deprecated alias of --node-id")->group(""),
      "SG_INSTANCE_ID");
  env(app.add_option("--shutdown-timeout", cfg.shutdown_timeout_seconds,
                     "Seconds to drain in-flight work after SIGTERM before closing")
          ->check(CLI::Range(0.0, 3600.0))
          ->capture_default_str()
          ->group(process),
      "SG_SHUTDOWN_TIMEOUT");

  auto bus = "Event bus";
  env(app.add_option("--stream-maxlen", cfg.stream_maxlen,
                     "Approximate MAXLEN of every stream (floored at 1000)")
          ->check(CLI::PositiveNumber)
          ->capture_default_str()
          ->group(bus),
      "SG_STREAM_MAXLEN");

  auto llm = "LLM";
  env(app.add_option("--llm-provider", cfg.llm_provider,
                     "auto (openai when an API key is set, else echo), echo (offline) or openai (any "
                     "OpenAI-compatible API)")
          ->capture_default_str()
          ->group(llm),
      "SG_LLM_PROVIDER");
  env(app.add_option("--llm-base-url", cfg.llm_base_url, "Base URL of the OpenAI-compatible API")
          ->capture_default_str()
          ->group(llm),
      "SG_LLM_BASE_URL");
  env(app.add_option("--llm-model", cfg.llm_model, "Model name sent to the API")->capture_default_str()->group(llm),
      "SG_LLM_MODEL");
  env(app.add_option("--llm-temperature", cfg.llm_temperature, "Sampling temperature")
          ->check(CLI::Range(0.0, 2.0))
          ->group(llm),
      "SG_LLM_TEMPERATURE");
  env(app.add_option("--llm-max-tokens", cfg.llm_max_tokens, "Longest reply in tokens")
          ->check(CLI::Range(1, 1'000'000))
          ->group(llm),
      "SG_LLM_MAX_TOKENS");
  env(app.add_option("--llm-top-p", cfg.llm_top_p, "Nucleus sampling")->check(CLI::Range(0.0, 1.0))->group(llm),
      "SG_LLM_TOP_P");
  env(app.add_option("--llm-connect-timeout", cfg.llm_connect_timeout_seconds, "Seconds to connect to the API")
          ->check(CLI::Range(0.1, 600.0))
          ->group(llm),
      "SG_LLM_CONNECT_TIMEOUT");
  env(app.add_option("--llm-timeout", cfg.llm_timeout_seconds, "Seconds for the whole response of one attempt")
          ->check(CLI::Range(0.1, 3600.0))
          ->group(llm),
      "SG_LLM_TIMEOUT");
  env(app.add_option("--llm-max-retries", cfg.llm_max_retries, "Retries on 429 and 5xx (honouring Retry-After)")
          ->check(CLI::Range(0, 20))
          ->group(llm),
      "SG_LLM_MAX_RETRIES");
  env(app.add_option("--llm-echo-delay-ms", cfg.llm_echo_delay_ms,
                     "echo provider: milliseconds each reply takes (simulates a slow model)")
          ->check(CLI::Range(0, 600'000))
          ->group(llm),
      "SG_LLM_ECHO_DELAY_MS");

  auto persona = "Message processor";
  env(app.add_option("--bot-name", cfg.bot_name, "The persona's name (system prompt, replies)")
          ->check([](const std::string& v) { return v.empty() || v.size() > 64 ? "1 to 64 characters" : ""; })
          ->group(persona),
      "SG_BOT_NAME");
  env(app.add_option("--system-prompt-file", cfg.system_prompt_file,
                     "System prompt template ({bot_name}, {platform}, {channel}, {participants}, {tools}, "
                     "{current_time}); empty: the built-in one")
          ->check([](const std::string& v) { return v.empty() ? std::string() : CLI::ExistingFile(v); })
          ->group(persona),
      "SG_SYSTEM_PROMPT_FILE");
  env(app.add_option("--history-messages", cfg.history_messages, "Earlier channel messages given to the model")
          ->check(CLI::Range(0, 500))
          ->group(persona),
      "SG_HISTORY_MESSAGES");
  env(app.add_option("--history-keep", cfg.history_keep,
                     "Messages kept per channel in Redis; older ones are deleted as new ones arrive (0: keep "
                     "every message for 90 days)")
          ->check(CLI::Range(0, 1000000))
          ->group(persona),
      "SG_HISTORY_KEEP");
  env(app.add_option("--max-tool-rounds", cfg.max_tool_rounds, "Model calls per turn that may use tools")
          ->check(CLI::Range(1, 50))
          ->group(persona),
      "SG_MAX_TOOL_ROUNDS");
  env(app.add_option("--typing-delay-ms", cfg.typing_delay_ms,
                     "Show the typing indicator only when the reply takes longer than this (0: at once)")
          ->check(CLI::Range(0, 60000))
          ->group(persona),
      "SG_TYPING_DELAY_MS");
  env(app.add_option("--presence-interval", cfg.presence_interval_seconds,
                     "Seconds between presence updates by the status leader (0: off)")
          ->check(CLI::Range(0.0, 86400.0))
          ->group(persona),
      "SG_PRESENCE_INTERVAL");
  env(app.add_option("--presence-text", cfg.presence_text,
                     "The status when the model writes none in a <dstatus> tag ({bot_name} is replaced)")
          ->check([](const std::string& v) {
            const auto length = worker::utf8_length(v);
            return length && *length >= 1 && *length <= worker::max_status_characters
                       ? std::string()
                       : std::string("1 to 128 characters of UTF-8");
          })
          ->group(persona),
      "SG_PRESENCE_TEXT");

  auto group = "Group chats";
  env(app.add_option("--reply-policy", cfg.reply_policy,
                     "Messages not addressed to the bot: addressed (stored, never answered), triage (a short model "
                     "call decides) or always; a default and per-platform overrides, e.g. "
                     "triage,webchat=always,redis=addressed")
          ->group(group),
      "SG_REPLY_POLICY");
  env(app.add_option("--triage-model", cfg.triage_model, "Model of the triage call (empty: --llm-model)")
          ->group(group),
      "SG_TRIAGE_MODEL");
  env(app.add_option("--triage-max-tokens", cfg.triage_max_tokens, "Longest triage answer in tokens")
          ->check(CLI::Range(1, 1000))
          ->group(group),
      "SG_TRIAGE_MAX_TOKENS");
  env(app.add_option("--unprompted-cooldown", cfg.unprompted_cooldown_seconds,
                     "Seconds after an unprompted reply in a channel before the next one there (0: none)")
          ->check(CLI::Range(0.0, 604800.0))
          ->group(group),
      "SG_UNPROMPTED_COOLDOWN");
  env(app.add_option("--command-prefix", cfg.command_prefix,
                     "Prefix of the chat commands (!help, !forget, !mode, !quiet)")
          ->check([](const std::string& v) {
            // No quotes, backslashes or '#': the prefix must survive a TOML file (config print).
            const bool ok = !v.empty() && v.size() <= 8 && std::all_of(v.begin(), v.end(), [](unsigned char c) {
                              return c > 0x20 && c != 0x7f && c != '"' && c != '\'' && c != '\\' && c != '#';
                            });
            return ok ? std::string() : std::string("1 to 8 characters, no spaces, quotes, backslashes or '#'");
          })
          ->group(group),
      "SG_COMMAND_PREFIX");
  env(app.add_option("--admin-roles", cfg.admin_roles,
                     "Platform role ids whose members may use !mode and !quiet (besides platform admins)")
          ->delimiter(',')
          ->group(group),
      "SG_ADMIN_ROLES");
  env(app.add_option("--webchat-admins", cfg.webchat_admins, "Web chat user ids that may use !mode and !quiet")
          ->delimiter(',')
          ->group(group),
      "SG_WEBCHAT_ADMINS");
  const auto seconds_or_off = [](const std::string& v) {
    double d = -1;
    const auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
    const bool ok = ec == std::errc{} && ptr == v.data() + v.size() && (d == 0 || (d >= 1 && d <= 2592000));
    return ok ? std::string() : std::string("0 (off) or 1 to 2592000 seconds");
  };
  env(app.add_option("--heartbeat-initial-delay", cfg.heartbeat_initial_delay_seconds,
                     "Seconds after start before the heartbeat leader's first round")
          ->check(CLI::Range(0.0, 604800.0))
          ->group(group),
      "SG_HEARTBEAT_INITIAL_DELAY");
  env(app.add_option("--heartbeat-interval", cfg.heartbeat_interval_seconds,
                     "Seconds between heartbeat rounds, which look in on quiet channels the bot has spoken in "
                     "(0: off)")
          ->check(seconds_or_off)
          ->group(group),
      "SG_HEARTBEAT_INTERVAL");
  env(app.add_option("--heartbeat-quiet", cfg.heartbeat_quiet_seconds,
                     "A heartbeat visits only channels whose last message is older than this many seconds")
          ->check(CLI::Range(0.0, 2592000.0))
          ->group(group),
      "SG_HEARTBEAT_QUIET");

  auto quotas = "Quotas (docs/operations.md, \"Quotas and usage\")";
  env(app.add_option("--rate-user", cfg.rate_user,
                     "Turns one user may start, as N/period (20/min, 600/h, 5/10s, 1000/day); over it, REST "
                     "answers 429 and chats get one short notice per window (empty: off)")
          ->group(quotas),
      "SG_RATE_USER");
  env(app.add_option("--rate-instance", cfg.rate_instance,
                     "Turns per Redis-platform instance (per channel on other platforms), as N/period (empty: off)")
          ->group(quotas),
      "SG_RATE_INSTANCE");
  env(app.add_option("--budget-instance-tokens", cfg.budget_instance_tokens,
                     "Prompt + completion tokens per instance (per channel on other platforms) per UTC day; turns "
                     "past it wait for the next day (0: off)")
          ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1'000'000'000'000}))
          ->group(quotas),
      "SG_BUDGET_INSTANCE_TOKENS");

  auto discord = "Discord (docs/discord.md)";
  env(app.add_option("--discord-token", cfg.discord_token,
                     "Bot token; with one, the gateway and standalone roles connect to Discord (a secret: prefer "
                     "SG_DISCORD_TOKEN)")
          ->group(discord),
      "SG_DISCORD_TOKEN");
  env(app.add_option("--discord-intents", cfg.discord_intents,
                     "Gateway intents: names (guilds, guild_messages, guild_message_reactions, direct_messages, "
                     "direct_message_reactions, message_content) or a number")
          ->capture_default_str()
          ->group(discord),
      "SG_DISCORD_INTENTS");
  env(app.add_option("--discord-shards", cfg.discord_shards, "auto (as many as Discord recommends) or a number")
          ->capture_default_str()
          ->group(discord),
      "SG_DISCORD_SHARDS");
  env(app.add_option("--discord-api-url", cfg.discord_api_url, "Base URL of Discord's HTTP API")
          ->capture_default_str()
          ->group(discord),
      "SG_DISCORD_API_URL");
  env(app.add_option("--discord-gateway-url", cfg.discord_gateway_url,
                     "Gateway URL (ws:// or wss://; default: the one GET /gateway/bot returns)")
          ->group(discord),
      "SG_DISCORD_GATEWAY_URL");
  env(app.add_option("--discord-allow-bots", cfg.discord_allow_bots,
                     "Answer messages of other bots (the bot's own are always ignored)")
          ->capture_default_str()
          ->group(discord),
      "SG_DISCORD_ALLOW_BOTS");

  auto matrix = "Matrix (docs/matrix.md)";
  env(app.add_option("--matrix-homeserver", cfg.matrix_homeserver,
                     "Homeserver base URL; with it and credentials, the gateway and standalone roles join Matrix")
          ->group(matrix),
      "SG_MATRIX_HOMESERVER");
  env(app.add_option("--matrix-user-id", cfg.matrix_user_id, "The bot's account, @bot:example.org")->group(matrix),
      "SG_MATRIX_USER_ID");
  env(app.add_option("--matrix-access-token", cfg.matrix_access_token,
                     "Access token of the bot's account (a secret: prefer SG_MATRIX_ACCESS_TOKEN)")
          ->group(matrix),
      "SG_MATRIX_ACCESS_TOKEN");
  env(app.add_option("--matrix-password", cfg.matrix_password,
                     "Password: logs in once (m.login.password), keeps the token and device id in Redis (a secret: "
                     "prefer SG_MATRIX_PASSWORD)")
          ->group(matrix),
      "SG_MATRIX_PASSWORD");
  env(app.add_option("--matrix-auto-join", cfg.matrix_auto_join,
                     "Invites joined: off, invited-by-allowed (an allowed user invites), all")
          ->capture_default_str()
          ->group(matrix),
      "SG_MATRIX_AUTO_JOIN");
  env(app.add_option("--matrix-allowed-users", cfg.matrix_allowed_users,
                     "Who the bot answers and whose invites it takes: patterns like @*:example.org (empty: everyone)")
          ->delimiter(',')
          ->group(matrix),
      "SG_MATRIX_ALLOWED_USERS");

  auto tools = "Tools";
  env(app.add_option("--tools-mode", cfg.tools_mode,
                     "in_process (the worker runs tools) or remote (the tools role runs them over sg:stream:tools)")
          ->group(tools),
      "SG_TOOLS_MODE");
  env(app.add_option("--tool-permissions", cfg.tool_permissions,
                     R"(JSON rules per tool ("*": all): {"calculator": {"deny_platforms": ["discord"]}}; keys )"
                     "allow_/deny_ platforms, channels, users")
          ->group(tools),
      "SG_TOOL_PERMISSIONS");
  env(app.add_option("--tool-timeout", cfg.tool_timeout_seconds, "Seconds a tool call may take")
          ->check(CLI::Range(0.1, 600.0))
          ->group(tools),
      "SG_TOOL_TIMEOUT");
  env(app.add_option("--mcp-servers", cfg.mcp_servers,
                     R"(MCP servers as JSON: {"files": {"command": "npx", "args": [...], "env": ["HOME"]}, )"
                     R"("search": {"url": "https://host/mcp", "bearer_token_env": "SG_SEARCH_TOKEN"}}; )"
                     "in the config file also [mcp-servers.NAME] tables (docs/tools.md)")
          ->group(tools),
      "SG_MCP_SERVERS");

  auto secrets = "Secrets (prefer the environment or the config file: flags show in ps)";
  env(app.add_option("--admin-api-key,--admin-key", cfg.admin_api_key, "Admin key of the REST API")->group(secrets),
      "SG_ADMIN_API_KEY");
}

// `stargazer dlq list|replay|purge`: operator commands on a stream's dead-letter stream.
struct dlq_commands {
  CLI::App* list = nullptr;
  CLI::App* replay = nullptr;
  CLI::App* purge = nullptr;
};

// A full stream entry id, <ms>-<seq>: a bare <ms> would select a range of entries.
const CLI::Validator entry_id{[](std::string& s) -> std::string {
                                const auto dash = s.find('-');
                                const auto digits = [](std::string_view d) {
                                  return !d.empty() && d.size() <= 20 &&
                                         d.find_first_not_of("0123456789") == std::string_view::npos;
                                };
                                if (dash == std::string::npos || !digits(std::string_view(s).substr(0, dash)) ||
                                    !digits(std::string_view(s).substr(dash + 1)))
                                  return "'" + s + "' is not a stream entry id (<ms>-<seq>)";
                                return {};
                              },
                              "ID"};

dlq_commands define_dlq_commands(CLI::App& app, dlq_options& opts) {
  auto* dlq = app.add_subcommand("dlq", "Inspect, replay or purge dead-lettered entries ({stream}:dlq)")->fallthrough();
  dlq->require_subcommand(1);
  const auto stream_option = [&](CLI::App* cmd) {
    cmd->add_option("--stream", opts.stream, "Source stream whose {stream}:dlq is used (default: the inbound stream)");
  };
  const auto selection = [&](CLI::App* cmd, const char* verb, const char* all_help) {
    auto* ids = cmd->add_option("--id", opts.ids, fmt::format("DLQ entry ids (<ms>-<seq>) to {}", verb))
                    ->check(entry_id)
                    ->default_str("");
    auto* all = cmd->add_flag("--all", opts.all, all_help);
    ids->excludes(all);
  };

  dlq_commands cmds;
  cmds.list = dlq->add_subcommand("list", "Print dead-lettered entries, oldest first")->fallthrough();
  stream_option(cmds.list);
  cmds.list->add_option("--count", opts.count, "Print at most this many entries")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1'000'000}))
      ->capture_default_str();
  cmds.list->add_flag("--json", opts.json, "One JSON object per line");

  cmds.replay = dlq->add_subcommand("replay", "Put entries back on their stream with their original fields")
                    ->fallthrough();
  stream_option(cmds.replay);
  selection(cmds.replay, "replay", "Replay every entry");

  cmds.purge = dlq->add_subcommand("purge", "Delete entries from the dead-letter stream")->fallthrough();
  stream_option(cmds.purge);
  selection(cmds.purge, "purge", "Delete the whole dead-letter stream");
  return cmds;
}

// `stargazer chat`, `instance create|list|delete`, `user add|list|remove`, `identity
// link|unlink|show`: clients of a running gateway's REST API.
//
// Their environment fallbacks (SG_URL, SG_INSTANCE, SG_INSTANCE_KEY) are applied after
// parsing, to the chosen command only: CLI11 2.1 reads `envname`s and runs the callbacks
// of every subcommand, parsed or not, so options of several subcommands bound to one
// variable would overwrite the parsed one's value, and a bad SG_URL would fail any run.
struct client_command {
  CLI::App* app = nullptr;
  command what = command::run;
  CLI::Option* url = nullptr;
  CLI::Option* instance = nullptr;  // --instance, where it is required
  CLI::Option* key = nullptr;       // chat's --key
};

const CLI::Validator http_url{[](std::string& s) -> std::string {
                                std::string error;
                                if (!http::parse_base_url(s, &error)) return error;
                                return {};
                              },
                              "URL"};

std::vector<client_command> define_client_commands(CLI::App& app, client_options& opts) {
  std::vector<client_command> cmds;
  const auto add = [&](CLI::App* parent, const char* name, const char* help, command what) -> client_command& {
    auto& c = cmds.emplace_back();
    c.app = parent->add_subcommand(name, help)->fallthrough();
    c.what = what;
    c.url = c.app->add_option("--url", opts.url, "Base URL of the gateway's REST API (env SG_URL)")
                ->check(http_url)
                ->capture_default_str();
    return c;
  };
  const auto instance = [&](client_command& c) {
    c.instance = c.app->add_option("--instance", opts.instance, "Instance id (env SG_INSTANCE); required");
  };
  const auto json = [&](client_command& c) {
    c.app->add_flag("--json", opts.json, "Print the REST API's JSON response instead of a table");
  };

  auto& chat = add(&app, "chat",
                   "Chat with an instance's bot: each line of stdin is a message, replies are printed as they "
                   "arrive; /quit or the end of input leaves",
                   command::chat);
  instance(chat);
  chat.key = chat.app->add_option("--key", opts.key,
                                  "The instance's API key (env SG_INSTANCE_KEY; default: the admin key)");
  chat.app->add_option("--user-id", opts.user_id, "Your user id on the instance (default: $USER)");
  chat.app->add_option("--user-name", opts.user_name, "Your display name (default: $USER)");

  auto* instances = app.add_subcommand("instance", "Create, list or delete instances of the Redis platform (admin key)")
                        ->fallthrough();
  instances->require_subcommand(1);
  auto& create = add(instances, "create", "Create an instance; prints its id and its API key (shown only once)",
                     command::instance_create);
  create.app->add_option("--id", opts.instance, "Instance id, 1-64 of [A-Za-z0-9._-] (default: generated)");
  create.app->add_option("--name", opts.name, "Display name");
  json(create);
  json(add(instances, "list", "List instances", command::instance_list));
  auto& remove_instance =
      add(instances, "delete", "Delete an instance with its users, history and events", command::instance_delete);
  remove_instance.app->add_option("ID", opts.instance, "Instance id")->required();
  json(remove_instance);

  auto* users =
      app.add_subcommand("user", "Register, list or remove the users of an instance (admin key)")->fallthrough();
  users->require_subcommand(1);
  auto& add_user = add(users, "add", "Register a user (an instance with users accepts messages only from them)",
                       command::user_add);
  instance(add_user);
  add_user.app->add_option("USER_ID", opts.user_id, "User id, 1-128 of [A-Za-z0-9._:@-]")->required();
  add_user.app->add_option("--name", opts.name, "Display name (default: the user id)");
  json(add_user);
  auto& list_users = add(users, "list", "List the registered users", command::user_list);
  instance(list_users);
  json(list_users);
  auto& remove_user = add(users, "remove", "Remove a registered user", command::user_remove);
  instance(remove_user);
  remove_user.app->add_option("USER_ID", opts.user_id, "User id")->required();
  json(remove_user);

  auto* identities =
      app.add_subcommand("identity", "Link one person's accounts on several platforms to a unified id (admin key)")
          ->fallthrough();
  identities->require_subcommand(1);
  auto& link = add(identities, "link",
                   "Link accounts to one unified id: the one they share, --id, or a new one; accounts of different "
                   "ids are refused unless --merge",
                   command::identity_link);
  link.app->add_option("ACCOUNT", opts.accounts,
                       "Accounts as platform:user_id (discord:123 matrix:@ada:example.org webchat:browser-0001)")
      ->required();
  link.app->add_option("--id", opts.unified_id, "The unified id to link to, 1-64 of [A-Za-z0-9._-]");
  link.app->add_flag("--merge", opts.merge, "Merge the accounts' different unified ids into one instead of refusing");
  json(link);
  auto& unlink = add(identities, "unlink", "Remove an account from its unified id", command::identity_unlink);
  unlink.app->add_option("ACCOUNT", opts.accounts, "The account, platform:user_id")->required()->expected(1);
  json(unlink);
  auto& show = add(identities, "show", "Show the unified id of an account (platform:user_id) or the accounts of a unified id",
                   command::identity_show);
  show.app->add_option("NAME", opts.accounts, "platform:user_id or a unified id")->required()->expected(1);
  json(show);

  auto* webchat = app.add_subcommand("webchat", "Invite people to the web chat, list and revoke their sign-ins (admin key)")
                      ->fallthrough();
  webchat->require_subcommand(1);
  auto& invite = add(webchat, "invite",
                     "Make a one-time sign-in link for NAME (printed once); opening it signs that browser in as NAME",
                     command::webchat_invite);
  invite.app->add_option("--name", opts.name, "The name the invited person speaks as (1-64 bytes)")->required();
  invite.app->add_option("--rooms", opts.rooms, "Rooms the person may use, comma-separated (default: every room)")
      ->delimiter(',');
  const platform::webchat_invite_limits limits;
  const CLI::Validator duration{[max = limits.max_ttl](std::string& v) -> std::string {
                                  if (platform::parse_webchat_duration(v, max)) return {};
                                  return "'" + v + "' is not a duration like 30m, 12h, 7d or 2w (at most 365d)";
                                },
                                "DURATION"};
  invite.app
      ->add_option_function<std::string>(
          "--expires",
          [&opts, max = limits.max_ttl](const std::string& v) {
            opts.expires_seconds = platform::parse_webchat_duration(v, max)->count();  // checked above
          },
          "How long the link works: 30m, 12h, 7d, 2w or seconds (default 7d)")
      ->check(duration);
  invite.app->add_flag("--admin", opts.admin, "Make the person a web chat admin (their messages carry the admin role)");
  json(invite);
  json(add(webchat, "list", "List the invites (pending, used, revoked, expired) and the signed-in sessions",
           command::webchat_list));
  auto& revoke = add(webchat, "revoke",
                     "Revoke a session (its id), an invite (its id), or everything of a name: sessions and pending "
                     "invites; the sessions' open chats close within seconds",
                     command::webchat_revoke);
  revoke.app->add_option("TARGET", opts.revoke_target, "A session id, an invite id (16 hex digits) or a name")
      ->required();
  json(revoke);
  return cmds;
}

// An option's environment fallback, validated as the flag would be.
void env_fallback(CLI::Option* opt, const char* name) {
  if (opt == nullptr || opt->count() > 0) return;
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return;
  opt->add_result(std::string(value));
  opt->run_callback();
}

// Environment fallbacks, defaults and checks of the chosen client command.
void complete_client_command(const client_command& c, const config& cfg, client_options& opts) {
  env_fallback(c.url, "SG_URL");
  env_fallback(c.instance, "SG_INSTANCE");
  env_fallback(c.key, "SG_INSTANCE_KEY");
  if (c.instance != nullptr && c.instance->count() == 0)
    throw bad_value("--instance: required (or SG_INSTANCE)");
  if (c.what == command::chat) {
    if (opts.key.empty() && cfg.admin_api_key.empty())
      throw bad_value("--key: chat needs the instance's API key (--key or SG_INSTANCE_KEY)");
    const char* user = std::getenv("USER");
    const std::string login = user != nullptr && *user != '\0' ? user : "terminal";
    if (opts.user_id.empty()) opts.user_id = login;
    if (opts.user_name.empty()) opts.user_name = login;
    return;
  }
  if (cfg.admin_api_key.empty())
    throw bad_value("--admin-key: this command needs the admin key (--admin-key or SG_ADMIN_API_KEY)");
  if (c.what == command::user_add && opts.name.empty()) opts.name = opts.user_id;
}

// `stargazer usage`: the days checked and defaulted (the 30 days up to today, UTC).
void complete_usage_command(usage_options& opts) {
  const auto& id = opts.instance;
  const bool id_ok = id.size() <= 64 && id.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                             "0123456789._-") == std::string::npos;
  if (!id_ok) throw bad_value(fmt::format("--instance: '{}' is not an instance id (1-64 of [A-Za-z0-9._-])", id));
  auto to = platform::utc_day_of(std::chrono::system_clock::now());
  if (!opts.to.empty()) {
    const auto day = platform::parse_day(opts.to);
    if (!day) throw bad_value(fmt::format("--to: '{}' is not a date, YYYY-MM-DD", opts.to));
    to = *day;
  }
  auto from = to - std::chrono::days(29);
  if (!opts.from.empty()) {
    const auto day = platform::parse_day(opts.from);
    if (!day) throw bad_value(fmt::format("--from: '{}' is not a date, YYYY-MM-DD", opts.from));
    from = *day;
  }
  if (from > to) throw bad_value("--from: after --to");
  if ((to - from).count() >= platform::max_usage_days)
    throw bad_value(fmt::format("--from: at most {} days from --from to --to", platform::max_usage_days));
  opts.from = platform::format_day(from);
  opts.to = platform::format_day(to);
}

// The config file's [mcp-servers.NAME] tables (and [mcp-servers.NAME.headers]) as the
// JSON --mcp-servers takes; its parser then checks the fields.
std::string mcp_servers_json(const std::vector<CLI::ConfigItem>& items, const std::string& path) {
  struct table {
    std::vector<std::pair<std::string, std::string>> fields;  // name -> JSON value
    std::vector<std::pair<std::string, std::string>> headers;
  };
  std::map<std::string, table> servers;
  for (const auto& item : items) {
    if (item.parents.size() < 2 || item.parents.size() > 3 ||
        (item.parents.size() == 3 && item.parents[2] != "headers"))
      throw bad_value(fmt::format("--config: '{}' in '{}' is not a field of an [mcp-servers.NAME] table",
                                  item.fullname(), path));
    auto& t = servers[item.parents[1]];
    const auto one = [&]() -> const std::string& {
      if (item.inputs.size() != 1)
        throw bad_value(fmt::format("--config: '{}' in '{}' must be one value", item.fullname(), path));
      return item.inputs.front();
    };
    if (item.parents.size() == 3) {
      t.headers.emplace_back(item.name, json::quoted(one()));
    } else if (item.name == "args" || item.name == "env") {
      std::string list = "[";
      for (const auto& v : item.inputs) list += (list.size() > 1 ? "," : "") + json::quoted(v);
      t.fields.emplace_back(item.name, list + "]");
    } else if (item.name == "timeout" || item.name == "enabled") {
      const auto& v = one();  // a TOML number or boolean: valid JSON as written
      if (json::parse_object("{\"v\":" + v + "}").index() != 0)
        throw bad_value(fmt::format("--config: '{}' in '{}' is not a number or true/false", item.fullname(), path));
      t.fields.emplace_back(item.name, v);
    } else {
      t.fields.emplace_back(item.name, json::quoted(one()));
    }
  }
  std::string out = "{";
  for (const auto& [name, t] : servers) {
    if (out.size() > 1) out += ',';
    out += json::quoted(name) + ":{";
    bool first = true;
    for (const auto& [field, value] : t.fields) {
      out += (first ? "" : ",") + json::quoted(field) + ":" + value;
      first = false;
    }
    if (!t.headers.empty()) {
      out += std::string(first ? "" : ",") + "\"headers\":{";
      for (std::size_t i = 0; i < t.headers.size(); ++i)
        out += (i ? "," : "") + json::quoted(t.headers[i].first) + ":" + t.headers[i].second;
      out += '}';
    }
    out += '}';
  }
  return out + "}";
}

// Applies the config file's values to the bound variables, leaving every option
// unparsed so that flags and then environment variables still override them.
void apply_config_file(CLI::App& app, config& cfg, const std::string& path) {
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_file(path);
  } catch (const CLI::Error& e) {
    throw bad_value(fmt::format("--config: cannot read '{}': {}", path, e.what()));
  }
  std::vector<CLI::ConfigItem> mcp_tables;
  for (const auto& item : items) {
    if (item.name == "++" || item.name == "--") continue;  // CLI11's section markers
    if (!item.parents.empty() && normalize_key(item.parents.front()) == "mcp-servers") {
      mcp_tables.push_back(item);
      continue;
    }
    const auto key = normalize_key(item.fullname());
    if (key == "config")
      throw bad_value(fmt::format("--config: '{}' sets 'config', which only the command line may set", path));
    if (key == "llm-api-key") {
      if (item.inputs.size() != 1) throw bad_value("--config: llm-api-key must be one string");
      cfg.llm_api_key = item.inputs.front();
      continue;
    }
    auto* opt = app.get_option_no_throw("--" + key);
    if (opt == nullptr) throw bad_value(fmt::format("--config: unknown key '{}' in '{}'", item.fullname(), path));
    // An empty list (`redis-sentinels = []`, as render_config writes it) keeps the list
    // empty; CLI11 would refuse a list option given no value. Every list option defaults to empty.
    if (item.inputs.empty()) continue;
    try {
      opt->add_result(item.inputs);
      opt->run_callback();
    } catch (const CLI::Error& e) {
      throw bad_value(fmt::format("--config: key '{}' in '{}': {}", item.fullname(), path, e.what()));
    }
    opt->clear();
  }
  if (!mcp_tables.empty()) {
    if (!cfg.mcp_servers.empty())
      throw bad_value(fmt::format("--config: '{}' has both mcp-servers and [mcp-servers.NAME] tables", path));
    cfg.mcp_servers = mcp_servers_json(mcp_tables, path);
  }
}

role role_from(const std::string& name) {
  if (name == "gateway") return role::gateway;
  if (name == "worker") return role::worker;
  if (name == "tools") return role::tools;
  return role::standalone;
}

// render_config writes what CLI11 2.1's reader gives back unchanged (escaped values used
// to gain a backslash per reload; found by test/fuzz/fuzz_config.cpp). That reader splits
// a value holding a space or a comma, and every list item, into quoted words, turning \"
// into "; any other value only loses its outer quotes (no escape sequences). So a value
// holding '"' or '\\' goes in a TOML literal string ('...', no escapes) unless it holds a
// single quote too; then '"' is escaped where the reader splits.
std::string toml_string(std::string_view s, bool list_item = false) {
  const bool plain = s.find_first_of("\"\\") == std::string_view::npos;
  if (!plain && s.find('\'') == std::string_view::npos) return "'" + std::string(s) + "'";
  const bool split = list_item || s.find_first_of(" ,") != std::string_view::npos;
  std::string out = "\"";
  for (char c : s) {
    if (split && c == '"') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

}  // namespace

std::variant<parsed_command, parse_exit> parse_command_line(int argc, const char* const* argv,
                                                            std::ostream& out, std::ostream& err) {
  parsed_command result;
  auto& cfg = result.cfg;
  std::string role_name = "standalone";
  for (int i = 1; i < argc; ++i) cfg.command_line.emplace_back(argv[i]);

  CLI::App app{"Stargazer: one LLM persona across chat platforms, scaled out over Redis Streams.", "stargazer"};
  app.option_defaults()->always_capture_default();
  std::string deprecated_node_id;
  define_options(app, cfg, role_name, deprecated_node_id);
  auto* config_cmd = app.add_subcommand("config", "Inspect the configuration")->fallthrough();
  auto* config_print = config_cmd->add_subcommand("print", "Print the effective configuration, secrets redacted");
  config_cmd->require_subcommand(1);
  const auto dlq = define_dlq_commands(app, result.dlq);
  auto* tools_cmd = app.add_subcommand("tools", "The tools the persona can use")->fallthrough();
  tools_cmd->require_subcommand(1);
  auto* tools_list = tools_cmd->add_subcommand("list",
                                               "Every tool, its origin (built-in or an MCP server) and whether it is "
                                               "available now (MCP servers as the processes running them report)")
                         ->fallthrough();
  tools_list->add_flag("--json", result.tools_json, "Print JSON instead of a table");
  auto* usage_cmd = app.add_subcommand("usage",
                                       "Tokens and turns per UTC day and channel (a Redis-platform instance is its "
                                       "channel), as the workers recorded them in Redis (kept 90 days)")
                        ->fallthrough();
  usage_cmd->add_option("--instance", result.usage.instance,
                        "Only this Redis-platform instance (default: every platform and channel)");
  usage_cmd->add_option("--from", result.usage.from, "First day, YYYY-MM-DD (default: 29 days before --to)");
  usage_cmd->add_option("--to", result.usage.to, "Last day, YYYY-MM-DD (default: today, UTC)");
  usage_cmd->add_flag("--json", result.usage.json, "Print JSON instead of a table");
  const auto client = define_client_commands(app, result.client);

  try {
    if (const auto path = config_path_from(argc, argv); !path.empty()) apply_config_file(app, cfg, path);
    app.parse(argc, argv);
    if (const char* key = std::getenv("SG_LLM_API_KEY"); key != nullptr) cfg.llm_api_key = key;
    cfg.process_role = role_from(role_name);
    if (!deprecated_node_id.empty()) {
      err << "stargazer: warning: --instance-id (SG_INSTANCE_ID) is deprecated; use --node-id (SG_NODE_ID)\n";
      if (cfg.node_id.empty()) cfg.node_id = deprecated_node_id;
    }
    validate(cfg);
    for (auto* cmd : {dlq.replay, dlq.purge})
      if (cmd->parsed() && result.dlq.ids.empty() && !result.dlq.all)
        throw bad_value(fmt::format("dlq {}: give --id ID... or --all", cmd->get_name()));
    if (usage_cmd->parsed()) complete_usage_command(result.usage);
    for (const auto& c : client)
      if (c.app->parsed()) {
        result.what = c.what;
        complete_client_command(c, cfg, result.client);
      }
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return parse_exit{0};
  } catch (const CLI::CallForAllHelp&) {
    out << app.help("", CLI::AppFormatMode::All);
    return parse_exit{0};
  } catch (const CLI::CallForVersion& v) {
    out << v.what() << "\n";
    return parse_exit{0};
  } catch (const CLI::ParseError& e) {
    err << "stargazer: error: " << e.what() << "\n";
    return parse_exit{2};
  } catch (const bad_value& e) {
    err << "stargazer: error: " << e.what() << "\n";
    return parse_exit{2};
  }
  if (config_print->parsed()) result.what = command::config_print;
  if (dlq.list->parsed()) result.what = command::dlq_list;
  if (dlq.replay->parsed()) result.what = command::dlq_replay;
  if (dlq.purge->parsed()) result.what = command::dlq_purge;
  if (tools_list->parsed()) result.what = command::tools_list;
  if (usage_cmd->parsed()) result.what = command::usage;
  return result;
}

std::variant<config, std::string> reload_config(const config& cfg) {
  std::vector<const char*> argv{"stargazer"};
  for (const auto& a : cfg.command_line) argv.push_back(a.c_str());
  std::ostringstream out, err;
  auto parsed = parse_command_line(static_cast<int>(argv.size()), argv.data(), out, err);
  if (auto* p = std::get_if<parsed_command>(&parsed)) {
    p->cfg.node_id = cfg.node_id;  // the process keeps its name (it may have been generated)
    return std::move(p->cfg);
  }
  auto message = err.str();
  while (!message.empty() && message.back() == '\n') message.pop_back();
  return message.empty() ? std::string("the command line no longer parses") : message;
}

std::string render_config(const config& cfg) {
  const auto secret = [](const std::string& v) { return v.empty() ? std::string("\"\"") : std::string("\"<redacted>\""); };
  std::string sentinels;
  for (const auto& s : cfg.redis_sentinels) sentinels += (sentinels.empty() ? "" : ", ") + toml_string(s, true);
  std::string out;
  auto line = [&](std::string_view key, const std::string& value) { out += fmt::format("{} = {}\n", key, value); };
  line("role", toml_string(to_string(cfg.process_role)));
  line("redis-url", toml_string(redis::redact_url(cfg.redis_url)));
  line("redis-sentinels", "[" + sentinels + "]");
  line("redis-sentinel-master", toml_string(cfg.redis_sentinel_master));
  line("redis-tls-ca-file", toml_string(cfg.redis_tls_ca_file));
  line("redis-tls-verify", cfg.redis_tls_verify ? "true" : "false");
  line("http-host", toml_string(cfg.http_host));
  line("http-port", std::to_string(cfg.http_port));
  line("http-max-body-bytes", std::to_string(cfg.http_max_body_bytes));
  line("http-header-timeout", fmt::format("{}", cfg.http_header_timeout_seconds));
  line("http-max-connections-per-ip", std::to_string(cfg.http_max_connections_per_ip));
  std::string proxies;
  for (const auto& p : cfg.http_trusted_proxies)
    proxies += (proxies.empty() ? "" : ", ") + toml_string(p, true);
  line("http-trusted-proxies", "[" + proxies + "]");
  line("health-port", std::to_string(cfg.health_port));
  std::string origins;
  for (const auto& o : cfg.webchat_allowed_origins) origins += (origins.empty() ? "" : ", ") + toml_string(o, true);
  line("webchat-enabled", cfg.webchat_enabled ? "true" : "false");
  line("webchat-allowed-origins", "[" + origins + "]");
  line("webchat-auth", toml_string(cfg.webchat_auth));
  line("webchat-session-ttl", fmt::format("{}", cfg.webchat_session_ttl_seconds));
  line("public-url", toml_string(cfg.public_url));
  line("data-dir", toml_string(cfg.data_dir));
  line("log-level", toml_string(cfg.log_level));
  line("log-format", toml_string(cfg.log_format));
  line("node-id", toml_string(cfg.node_id));
  line("shutdown-timeout", fmt::format("{}", cfg.shutdown_timeout_seconds));
  line("stream-maxlen", std::to_string(cfg.stream_maxlen));
  line("llm-provider", toml_string(cfg.llm_provider));
  line("llm-base-url", toml_string(cfg.llm_base_url));
  line("llm-model", toml_string(cfg.llm_model));
  line("llm-temperature", fmt::format("{}", cfg.llm_temperature));
  line("llm-max-tokens", std::to_string(cfg.llm_max_tokens));
  line("llm-top-p", fmt::format("{}", cfg.llm_top_p));
  line("llm-connect-timeout", fmt::format("{}", cfg.llm_connect_timeout_seconds));
  line("llm-timeout", fmt::format("{}", cfg.llm_timeout_seconds));
  line("llm-max-retries", std::to_string(cfg.llm_max_retries));
  line("llm-echo-delay-ms", std::to_string(cfg.llm_echo_delay_ms));
  line("bot-name", toml_string(cfg.bot_name));
  line("system-prompt-file", toml_string(cfg.system_prompt_file));
  line("history-messages", std::to_string(cfg.history_messages));
  line("history-keep", std::to_string(cfg.history_keep));
  line("max-tool-rounds", std::to_string(cfg.max_tool_rounds));
  line("typing-delay-ms", std::to_string(cfg.typing_delay_ms));
  line("presence-interval", fmt::format("{}", cfg.presence_interval_seconds));
  line("presence-text", toml_string(cfg.presence_text));
  const auto list = [&](const std::vector<std::string>& items) {
    std::string text;
    for (const auto& i : items) text += (text.empty() ? "" : ", ") + toml_string(i, true);
    return "[" + text + "]";
  };
  line("reply-policy", toml_string(cfg.reply_policy));
  line("triage-model", toml_string(cfg.triage_model));
  line("triage-max-tokens", std::to_string(cfg.triage_max_tokens));
  line("unprompted-cooldown", fmt::format("{}", cfg.unprompted_cooldown_seconds));
  line("command-prefix", toml_string(cfg.command_prefix));
  line("admin-roles", list(cfg.admin_roles));
  line("webchat-admins", list(cfg.webchat_admins));
  line("heartbeat-initial-delay", fmt::format("{}", cfg.heartbeat_initial_delay_seconds));
  line("heartbeat-interval", fmt::format("{}", cfg.heartbeat_interval_seconds));
  line("heartbeat-quiet", fmt::format("{}", cfg.heartbeat_quiet_seconds));
  line("rate-user", toml_string(cfg.rate_user));
  line("rate-instance", toml_string(cfg.rate_instance));
  line("budget-instance-tokens", std::to_string(cfg.budget_instance_tokens));
  line("discord-intents", toml_string(cfg.discord_intents));
  line("discord-shards", toml_string(cfg.discord_shards));
  line("discord-api-url", toml_string(cfg.discord_api_url));
  line("discord-gateway-url", toml_string(cfg.discord_gateway_url));
  line("discord-allow-bots", cfg.discord_allow_bots ? "true" : "false");
  line("matrix-homeserver", toml_string(cfg.matrix_homeserver));
  line("matrix-user-id", toml_string(cfg.matrix_user_id));
  line("matrix-auto-join", toml_string(cfg.matrix_auto_join));
  std::string matrix_allowed;
  for (const auto& u : cfg.matrix_allowed_users) matrix_allowed += (matrix_allowed.empty() ? "" : ", ") + toml_string(u, true);
  line("matrix-allowed-users", "[" + matrix_allowed + "]");
  line("tools-mode", toml_string(cfg.tools_mode));
  line("tool-permissions", toml_string(cfg.tool_permissions));
  line("tool-timeout", fmt::format("{}", cfg.tool_timeout_seconds));
  line("mcp-servers", toml_string(cfg.mcp_servers));
  line("admin-api-key", secret(cfg.admin_api_key));
  line("llm-api-key", secret(cfg.llm_api_key));
  line("discord-token", secret(cfg.discord_token));
  line("matrix-access-token", secret(cfg.matrix_access_token));
  line("matrix-password", secret(cfg.matrix_password));
  return out;
}

}  // namespace stargazer
