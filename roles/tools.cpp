// The tools role: consumes `sg:stream:tools` in group `sg:tools` and answers
// each request on the worker's reply stream. Scale by running more of them.

#include "common.hpp"
#include "roles.hpp"

#include "stargazer/tools/remote.hpp"

namespace stargazer::roles {

int run_tools(const config& cfg) {
  process p(cfg, "stargazer-tools-" + cfg.node_id);
  auto registry = make_tool_registry(cfg, p.redis);
  p.host.add(std::make_shared<redis_component>(p.redis, p.health));
  p.host.add(std::make_shared<stream_setup_component>(p.bus, role::tools, std::vector<std::string>{}, p.health));
  add_mcp_tools(p, *registry, true);
  p.host.add(std::make_shared<tools::tool_service>(p.redis, p.redis_config, p.bus, *registry, cfg.node_id,
                                                   tools::tool_service_settings{}, &p.metrics));
  auto health = add_health_server(p);
  return p.host.run();
}

}  // namespace stargazer::roles
