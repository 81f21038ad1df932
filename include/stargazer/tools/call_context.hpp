#pragma once
// Who calls a tool, and where: what permissions are checked against and what tools act on.

#include <map>
#include <string>

namespace stargazer::platform {
class platform_adapter;
}

namespace stargazer::tools {

struct call_context {
  std::string platform;
  std::string channel_id;
  std::string user_id;
  std::string user_name;
  std::string message_id;
  std::string trace_id;
  // The live adapter (gateway) or a proxy adapter; null where there is none.
  platform::platform_adapter* adapter = nullptr;

  std::map<std::string, std::string> to_map() const;
  static call_context from_map(const std::map<std::string, std::string>& m);
};

}  // namespace stargazer::tools
