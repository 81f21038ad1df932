#include "roles.hpp"

#include "stargazer/core/log.hpp"

namespace stargazer::roles {

int run_tools(const config&) {
  log::logger("tools").error("the tools role is not built yet (see README: status)");
  return 1;
}

}  // namespace stargazer::roles
