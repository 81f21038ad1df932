#pragma once
// The answer to a worker's RPC (docs/protocol.md §3.4): what the gateway's handler
// returns, what the reply list carries as JSON, what the worker's rpc_client gets back.

#include <string>

namespace stargazer::bus {

struct rpc_reply {
  bool ok = false;
  std::string result_json;  // when ok: a JSON value
  std::string error;        // when not ok
};

}  // namespace stargazer::bus
