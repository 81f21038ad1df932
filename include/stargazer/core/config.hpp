#pragma once
// The one configuration struct of the process, filled from (highest precedence first)
// command-line flags, SG_* environment variables, the TOML file named by --config /
// SG_CONFIG, and the defaults written here. Validated before any I/O.

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <variant>
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
  // Worker and tools roles: port for /healthz, /readyz and /metrics on --http-host (0: none).
  std::uint16_t health_port = 0;

  // Web chat (gateway and standalone): the page at `/` and its WebSocket. No authentication.
  bool webchat_enabled = true;
  // Origins (scheme://host[:port]) whose pages may open the WebSocket besides the page's
  // own; "*" allows any.
  std::vector<std::string> webchat_allowed_origins;

  // Process.
  std::string data_dir = "./stargazer-data";
  std::string log_level = "info";
  std::string log_format = "text";
  std::string instance_id;  // generated (host-random) when empty
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
  int max_tool_rounds = 5;         // LLM calls per turn that may ask for tools
  int typing_delay_ms = 250;       // typing indicator only for turns slower than this (0: at once)
  double presence_interval_seconds = 300.0;  // the status leader's presence updates (0: off)

  // Tools.
  std::string tools_mode = "in_process";  // in_process | remote (the tools role runs them)
  std::string tool_permissions;           // JSON: {"tool" or "*": {"allow_platforms": [...], "deny_users": [...]}}
  double tool_timeout_seconds = 10.0;     // per tool call

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

// What the command line asked for.
enum class command {
  run,
  config_print,
  dlq_list,
  dlq_replay,
  dlq_purge,
  chat,
  instance_create,
  instance_list,
  instance_delete,
  user_add,
  user_list,
  user_remove,
};

// Options of `stargazer dlq list|replay|purge` (operator commands, not configuration).
struct dlq_options {
  std::string stream;             // the source stream; empty: the inbound stream
  std::size_t count = 20;         // list: at most this many entries
  bool json = false;              // list: JSON lines instead of text
  std::vector<std::string> ids;   // replay/purge: these DLQ entry ids ...
  bool all = false;               // ... or every entry
};

// Options of the commands that call a gateway's REST API (docs/rest-api.md): the
// terminal client `stargazer chat` and the operator commands `stargazer instance
// create|list|delete` and `stargazer user add|list|remove` (docs/operations.md, "Operator
// commands"). The admin key they use is config::admin_api_key.
struct client_options {
  std::string url = "http://127.0.0.1:8080";  // the gateway (--url, SG_URL); a path prefix is kept
  std::string instance;   // chat, user: --instance (SG_INSTANCE); instance create: --id; instance delete: ID
  std::string name;       // instance create, user add: --name (display name; user add: default USER_ID)
  std::string user_id;    // user add/remove: USER_ID; chat: --user-id (default $USER)
  std::string user_name;  // chat: --user-name (default $USER)
  std::string key;        // chat: the instance's API key (--key, SG_INSTANCE_KEY; default: the admin key)
  bool json = false;      // operator commands: the REST API's JSON response instead of a table
};

struct parsed_command {
  command what = command::run;
  config cfg;
  dlq_options dlq;
  client_options client;
};

// Parsing ended without a command to run: help or version was printed (status 0), or
// the input was bad (status 2, one line naming the option was printed to stderr).
struct parse_exit {
  int status = 0;
};

// Parses argv and the environment. Writes help/version to `out`, errors to `err`.
std::variant<parsed_command, parse_exit> parse_command_line(int argc, const char* const* argv,
                                                            std::ostream& out, std::ostream& err);

// Parses `cfg.command_line` again (re-reading the config file): the reloaded
// configuration, or the one-line error.
std::variant<config, std::string> reload_config(const config& cfg);

// The effective configuration as TOML, secrets redacted; loadable again with --config.
std::string render_config(const config& cfg);

}  // namespace stargazer
