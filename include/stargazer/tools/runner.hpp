#pragma once
// The tools offered to the model and their execution: the interface the worker's message
// processor calls (tools::dispatcher implements it). The processor fills the context from
// the turn's message, with the adapter that turn sends through.

#include "stargazer/llm/chat.hpp"
#include "stargazer/tools/call_context.hpp"

#include <utility>
#include <boost/asio/awaitable.hpp>

#include <string>
#include <vector>

namespace stargazer::tools {

class tool_runner {
public:
  virtual ~tool_runner() = default;
  virtual std::vector<llm::tool_definition> offered(const call_context& ctx) const = 0;
  // The result text handed back to the model; failures are results too ("error: ..."),
  // so the model can recover, and never throw. `ctx.adapter` is set.
  virtual boost::asio::awaitable<std::string> run(const llm::tool_call& call, const call_context& ctx) = 0;
};

}  // namespace stargazer::tools
