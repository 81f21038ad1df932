#include "roles.hpp"

#include "stargazer/core/log.hpp"

namespace stargazer::roles {

int run_worker(const config&) {
  log::logger("worker").error("the worker role is not built yet (see README: status)");
  return 1;
}

}  // namespace stargazer::roles
