// stargazer: parse the command line, configure logging, run the chosen role.

#include "roles.hpp"

#include "options.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/platform/message_cache.hpp"

#include <cstdio>
#include <iostream>

int main(int argc, char** argv) {
  using namespace stargazer;
  auto parsed = parse_command_line(argc, argv, std::cout, std::cerr);
  if (const auto* exit = std::get_if<parse_exit>(&parsed)) return exit->status;
  const auto& cmd = std::get<parsed_command>(parsed);
  const auto& cfg = cmd.cfg;

  switch (cmd.what) {
    case command::config_print:
      std::cout << render_config(cfg);
      return 0;
    case command::dlq_list:
    case command::dlq_replay:
    case command::dlq_purge:
      return roles::run_dlq(cmd);
    case command::tools_list:
      return roles::run_tools_list(cmd);
    case command::usage:
      return roles::run_usage(cmd);
    case command::chat:
    case command::instance_create:
    case command::instance_list:
    case command::instance_delete:
    case command::user_add:
    case command::user_list:
    case command::user_remove:
    case command::identity_link:
    case command::identity_unlink:
    case command::identity_show:
    case command::webchat_invite:
    case command::webchat_list:
    case command::webchat_revoke:
      return roles::run_client(cmd);
    case command::run:
      break;
  }

  log::configure(*log::parse_level(cfg.log_level), *log::parse_format(cfg.log_format));
  platform::message_cache::keep_per_channel(static_cast<std::size_t>(cfg.history_keep));
  try {
    switch (cfg.process_role) {
      case role::gateway: return roles::run_gateway(cfg);
      case role::worker: return roles::run_worker(cfg);
      case role::tools: return roles::run_tools(cfg);
      case role::standalone: return roles::run_standalone(cfg);
    }
  } catch (const std::exception& e) {
    log::logger("main").error("{}", e.what());
    return 1;
  }
  return 1;
}
