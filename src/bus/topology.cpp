#include "stargazer/bus/topology.hpp"

#include <cstdlib>

namespace stargazer::bus {

topology topology::from_environment() {
  topology t;
  const auto env = [](const char* name, std::string& target) {
    if (const char* v = std::getenv(name); v != nullptr && *v != '\0') target = v;
  };
  env("SG_INBOUND_STREAM", t.inbound_stream);
  env("SG_OUTBOUND_STREAM_PREFIX", t.outbound_stream_prefix);
  env("SG_WORKER_GROUP", t.worker_group);
  env("SG_GATEWAY_GROUP_PREFIX", t.gateway_group_prefix);
  env("SG_TOOLS_STREAM", t.tools_stream);
  env("SG_TOOLS_GROUP", t.tools_group);
  env("SG_TOOLS_REPLY_STREAM_PREFIX", t.tools_reply_stream_prefix);
  return t;
}

}  // namespace stargazer::bus
