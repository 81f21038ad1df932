// The standalone role: every component in one process. Until the event bus and the
// worker exist it runs the gateway's components.

#include "roles.hpp"

namespace stargazer::roles {

int run_standalone(const config& cfg) { return run_gateway(cfg); }

}  // namespace stargazer::roles
