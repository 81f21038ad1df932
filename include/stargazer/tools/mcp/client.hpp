#pragma once
// One MCP server kept connected (docs/tools.md, "MCP servers"): connect, initialize
// (revision negotiation), notifications/initialized, tools/list page by page; then
// tools/call on request, pings answered, notifications/tools/list_changed followed by a
// new list. When the connection ends (the child exits, the session expires, a message
// over the limit) everything in flight fails at once with why, and the client connects
// again after a capped, jittered backoff. A call that passes its deadline is cancelled
// with notifications/cancelled.
//
// Threading: every member is called on the executor's thread.

#include "stargazer/tools/mcp/protocol.hpp"
#include "stargazer/tools/mcp/transport.hpp"

#include <utility>  // before Asio: 1.18's awaitable.hpp uses std::exchange
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

namespace stargazer::tools::mcp {

enum class server_state { starting, ready, down, stopped };
std::string_view to_string(server_state s);

struct server_status {
  std::string name;
  server_state state = server_state::starting;
  std::string detail;  // why it is down, or what it serves
  std::string transport;
  std::string protocol_version;
  std::size_t tools = 0;
  std::uint64_t connections = 0;  // connections that reached ready
  std::uint64_t invalid_messages = 0;  // lines or bodies that were not JSON-RPC
};

using transport_factory = std::function<std::unique_ptr<transport>()>;

struct client_settings {
  std::chrono::milliseconds handshake_timeout{30'000};  // initialize and each tools/list page
  std::chrono::milliseconds min_backoff{500};
  std::chrono::milliseconds max_backoff{30'000};
  std::chrono::milliseconds stop_grace{2'000};
  std::chrono::milliseconds ping_interval{30'000};  // while connected and idle or not
  std::chrono::milliseconds ping_timeout{10'000};
  std::string client_version = "0";
};

class client {
public:
  client(boost::asio::any_io_executor ex, std::string server_name, transport_factory make_transport,
         client_settings settings = {});
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  // Starts connecting in the background (and again after every loss) until stop().
  void start();
  // Ends the connection (the child is stopped) and fails what is in flight.
  boost::asio::awaitable<void> stop();

  // Called after the state or the tool list changed.
  void on_change(std::function<void()> fn);

  server_status status() const;
  // The tools of the last list (kept while the server is down, for listing).
  const std::vector<tool_descriptor>& tools() const;
  const std::string& name() const;

  // tools/call: the outcome, or why there is none (not connected, the deadline passed
  // and the request was cancelled, the connection ended, a JSON-RPC error).
  boost::asio::awaitable<std::variant<call_outcome, std::string>> call_tool(std::string tool, std::string arguments_json,
                                                                            std::chrono::milliseconds deadline);

  // A ping; nullopt when the server answered, else why not.
  boost::asio::awaitable<std::optional<std::string>> ping(std::chrono::milliseconds deadline);

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::tools::mcp
