#pragma once
// One connection to an MCP server that carries JSON-RPC messages (docs/tools.md, "MCP
// servers"): the client (mcp/client.hpp) writes requests and reads what the server sends,
// and does not know whether a child process's stdio or Streamable HTTP is underneath.
//
// Threading: every member is called on the executor's thread (a single-threaded
// io_context, as in every role); handlers are called there too.

#include <utility>  // before Asio: 1.18's awaitable.hpp uses std::exchange
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

namespace stargazer::tools::mcp {

struct transport_handlers {
  // One complete message as the server sent it (a JSON text, not yet parsed or checked).
  std::function<void(std::string message)> on_message;
  // The connection ended (the child exited, its stdout closed, the session expired, a
  // message over the size limit): called once, with why, after which the transport sends
  // nothing. The client then fails what is in flight and opens a new connection later.
  std::function<void(std::string why)> on_closed;
};

class transport {
public:
  virtual ~transport() = default;

  // Connects (starts the child process, or checks nothing for HTTP); the handlers are set
  // before any message arrives. An error says why it could not (e.g. the command is not
  // found), with the server's name.
  virtual boost::asio::awaitable<std::error_code> open(transport_handlers handlers) = 0;

  // Sends one message (a JSON-RPC request, notification or response, one line of JSON).
  virtual boost::asio::awaitable<std::error_code> send(std::string message) = 0;

  // Ends the connection: on_closed is not called for it. Stdio: closes the child's stdin,
  // SIGTERM to its process group, SIGKILL after `grace`, reaped.
  virtual boost::asio::awaitable<void> close(std::chrono::milliseconds grace) = 0;

  // The revision initialize agreed on (Streamable HTTP sends it as MCP-Protocol-Version).
  virtual void set_protocol_version(std::string /*version*/) {}

  // Short form for logs and /readyz: "stdio pid 1234", "http http://host:port/mcp".
  virtual std::string describe() const = 0;
};

// A stdio server (MCP "stdio" transport): the child process and what it is given.
struct stdio_settings {
  std::string server_name;  // for the log lines of its stderr and our own
  std::string command;      // a path, or a name looked up in PATH (never through a shell)
  std::vector<std::string> args;
  // The child's whole environment, "NAME=value" each: nothing else of ours is inherited.
  std::vector<std::string> environment;
  std::string working_directory;  // empty: ours
  // A line (message) longer than this closes the connection with a clear reason: a
  // server cannot make us buffer without bound.
  std::size_t max_message_bytes = 16 * 1024 * 1024;
};

// A Streamable HTTP server (MCP "Streamable HTTP" transport): POSTs each message, reads the
// answer as JSON or as an SSE stream, keeps the Mcp-Session-Id and reports a 404 on it as
// the end of the connection (the client initialises again).
struct http_settings {
  std::string server_name;
  std::string url;                             // the MCP endpoint, e.g. http://127.0.0.1:3001/mcp
  std::map<std::string, std::string> headers;  // sent with every request (a bearer token among them)
  std::size_t max_message_bytes = 16 * 1024 * 1024;
  std::chrono::milliseconds connect_timeout{10'000};
};

std::unique_ptr<transport> make_stdio_transport(boost::asio::any_io_executor ex, stdio_settings settings);
std::unique_ptr<transport> make_http_transport(boost::asio::any_io_executor ex, http_settings settings);

}  // namespace stargazer::tools::mcp
