#pragma once
// MCP servers as tools of the persona (docs/tools.md, "MCP servers").
//
// `server_pool` runs where tools run (the tools role, or a worker or standalone with
// in-process tools): one mcp::client per configured server; each server's tools join the
// registry as "{server}__{tool}" with the server's schema, its timeout as their deadline,
// and the registry's permissions and limits; while a server is down its tools are
// unavailable (not offered, and a call says why). It publishes what it serves to the
// catalog in Redis, which workers with --tools-mode=remote (`catalog_reader`) and
// `stargazer tools list` read: they offer those tools without starting any server.

#include "stargazer/core/metrics.hpp"
#include "stargazer/core/result.hpp"
#include "stargazer/core/service.hpp"
#include "stargazer/tools/mcp/client.hpp"
#include "stargazer/tools/mcp/protocol.hpp"
#include "stargazer/tools/registry.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace stargazer::redis {
class connection;
}

namespace stargazer::tools::mcp {

// A hash: server name -> its catalog entry (JSON, see catalog_entry). Every process that
// runs MCP servers writes its view every catalog_refresh; entries older than
// catalog_stale_after are ignored (their process is gone).
inline constexpr std::string_view catalog_key = "sg:tools:mcp:catalog";
inline constexpr std::chrono::seconds catalog_refresh{10};
inline constexpr std::chrono::seconds catalog_stale_after{45};

// The origin of a server's tools in the registry.
std::string origin_of(std::string_view server);

// One server as the catalog records it.
struct catalog_entry {
  std::string server;
  std::string state;  // to_string(server_state)
  std::string detail;
  std::string node;
  std::int64_t updated_ms = 0;  // Redis TIME of the write, milliseconds
  std::chrono::milliseconds timeout{30'000};
  struct tool_entry {
    std::string name;  // the registry name, "{server}__{tool}"
    std::string description;
    std::string parameters_json;
  };
  std::vector<tool_entry> tools;
};
std::string to_json(const catalog_entry& e);
std::variant<catalog_entry, std::string> parse_catalog_entry(std::string_view json);

// Reads the catalog (nothing for a missing key); stale entries are marked down.
boost::asio::awaitable<result<std::vector<catalog_entry>>> read_catalog(redis::connection& redis);

struct pool_settings {
  std::string node_id;
  std::string client_version = "0";
  std::size_t max_message_bytes = 16 * 1024 * 1024;
  client_settings client;  // handshake timeout, backoff
};

class server_pool final : public component {
public:
  // `catalog` (may be null) receives the catalog entries; `metrics` and `health` may be null.
  server_pool(boost::asio::any_io_executor ex, std::vector<server_config> servers, registry& tools,
              pool_settings settings, redis::connection* catalog, metrics::registry* metrics,
              health_registry* health);
  ~server_pool() override;

  std::string_view name() const override { return "mcp-servers"; }
  boost::asio::awaitable<void> start() override;  // starts connecting; does not wait for the servers
  boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline) override;

  std::vector<server_status> statuses() const;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

// Workers with --tools-mode=remote: the catalog's tools join the local registry (calls go
// to the tools service; the handler here is never run) and follow their servers' state.
class catalog_reader final : public component {
public:
  catalog_reader(redis::connection& redis, registry& tools, std::chrono::milliseconds interval = std::chrono::seconds(5));
  ~catalog_reader() override;

  std::string_view name() const override { return "mcp-catalog"; }
  boost::asio::awaitable<void> start() override;  // reads once, then every interval
  boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline) override;

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace stargazer::tools::mcp
