#include "stargazer/core/config.hpp"

namespace stargazer {

std::string_view to_string(role r) {
  switch (r) {
    case role::gateway: return "gateway";
    case role::worker: return "worker";
    case role::tools: return "tools";
    case role::standalone: return "standalone";
  }
  return "unknown";
}

}  // namespace stargazer
