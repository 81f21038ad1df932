#pragma once
// Entry points of the four roles. Each role file is the only place that wires
// components together for that role.

#include "options.hpp"

namespace stargazer::roles {

int run_gateway(const config& cfg);
int run_worker(const config& cfg);
int run_tools(const config& cfg);
int run_standalone(const config& cfg);

// `stargazer dlq list|replay|purge` (dlq.cpp): 0 on success, 1 on a Redis failure or an
// unknown id (one line on stderr).
int run_dlq(const parsed_command& cmd);
// `stargazer tools list [--json]`.
int run_tools_list(const parsed_command& cmd);
// `stargazer usage [--instance ID] [--from DAY] [--to DAY] [--json]` (usage.cpp): 0 on
// success, 1 when Redis cannot be read (one line on stderr).
int run_usage(const parsed_command& cmd);

// `stargazer chat`, `instance create|list|delete`, `user add|list|remove`, `identity
// link|unlink|show` (cli.cpp):
// clients of a gateway's REST API; 0 on success, 1 with one line on stderr otherwise.
int run_client(const parsed_command& cmd);

}  // namespace stargazer::roles
