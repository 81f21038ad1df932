// The standalone role: the gateway's and the worker's components in one process, on one
// Redis connection and bus, with the same stream path as the distributed system.

#include "common.hpp"
#include "roles.hpp"

#include "stargazer/core/log.hpp"

namespace stargazer::roles {

int run_standalone(const config& cfg) {
  if (cfg.effective_llm_provider() != "echo") {
    log::logger("standalone").error("--llm-provider {}: only the offline echo model is built yet", cfg.llm_provider);
    return 1;
  }
  process p(cfg, "stargazer-standalone-" + cfg.instance_id);
  p.host.add(std::make_shared<redis_component>(p.redis, p.health));
  p.host.add(
      std::make_shared<stream_setup_component>(p.bus, role::standalone, std::vector<std::string>{"redis", "webchat"}, p.health));
  auto worker = add_worker(p);  // consumers first, then the gateway's HTTP server
  auto gateway = add_gateway(p);
  return p.host.run();
}

}  // namespace stargazer::roles
