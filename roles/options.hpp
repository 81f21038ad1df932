#pragma once
// The command line: the option table (flags, SG_* environment variables, the TOML config
// file), the subcommands (`config print`, `dlq`, `chat`, `instance`, `user`, `identity`, `usage`), validation,
// rendering the effective configuration and reloading it. Fills core's `config`.

#include "stargazer/core/config.hpp"

#include <cstdint>
#include <iosfwd>
#include <string>
#include <variant>
#include <vector>

namespace stargazer {

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
  identity_link,
  identity_unlink,
  identity_show,
  webchat_invite,
  webchat_list,
  webchat_revoke,
  tools_list,
  usage,
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
// create|list|delete`, `stargazer user add|list|remove` and `stargazer identity
// link|unlink|show` (docs/operations.md, "Operator commands"). The admin key they use is
// config::admin_api_key.
struct client_options {
  std::string url = "http://127.0.0.1:8080";  // the gateway (--url, SG_URL); a path prefix is kept
  std::string instance;   // chat, user: --instance (SG_INSTANCE); instance create: --id; instance delete: ID
  std::string name;       // instance create, user add: --name (display name; user add: default USER_ID)
  std::string user_id;    // user add/remove: USER_ID; chat: --user-id (default $USER)
  std::string user_name;  // chat: --user-name (default $USER)
  std::string key;        // chat: the instance's API key (--key, SG_INSTANCE_KEY; default: the admin key)
  bool json = false;      // operator commands: the REST API's JSON response instead of a table
  std::vector<std::string> accounts;  // identity link: ACCOUNT...; unlink: ACCOUNT; show: ACCOUNT or UNIFIED_ID
  std::string unified_id;             // identity link: --id
  bool merge = false;                 // identity link: --merge
  // webchat invite: --name is `name`; --rooms, --expires (seconds, parsed from 7d, 12h, ...), --admin.
  std::vector<std::string> rooms;
  std::int64_t expires_seconds = 7 * 86400;
  bool admin = false;
  std::string revoke_target;  // webchat revoke: a session id, an invite id or a name
};

// Options of `stargazer usage` (reads the usage counters in Redis; docs/operations.md,
// "Quotas and usage"). Dates are UTC days, YYYY-MM-DD; after parsing both are set.
struct usage_options {
  std::string instance;  // a Redis-platform instance; empty: every platform and channel
  std::string from;      // default: 29 days before `to`
  std::string to;        // default: today
  bool json = false;
};

struct parsed_command {
  command what = command::run;
  config cfg;
  dlq_options dlq;
  client_options client;
  bool tools_json = false;  // tools list --json
  usage_options usage;
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
