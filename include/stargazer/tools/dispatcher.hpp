#pragma once
// The worker's tool runner: offers the registry's permitted tools to the model and runs
// each call where it belongs: gateway-pinned tools through the adapter's execute_tool
// RPC, others in this process (`in_process`) or on the tools service (`remote`), with
// identical results. Files a tool produces are sent to the channel through the adapter.

#include "stargazer/tools/registry.hpp"
#include "stargazer/tools/runner.hpp"

namespace stargazer::tools {

class remote_tool_client;

enum class execution_mode { in_process, remote };

class dispatcher final : public tool_runner {
public:
  // `remote` is required in remote mode.
  dispatcher(const registry& tools, execution_mode mode, remote_tool_client* remote = nullptr);

  std::vector<llm::tool_definition> offered(const call_context& ctx) const override;
  boost::asio::awaitable<std::string> run(const llm::tool_call& call, const call_context& ctx) override;


private:
  const registry& tools_;
  execution_mode mode_;
  remote_tool_client* remote_;
};

}  // namespace stargazer::tools
