// `stargazer tools list [--json]`: the built-in tools and those of the MCP servers, as
// the processes running the servers report them in Redis (sg:tools:mcp:catalog), with
// whether each is available now (docs/tools.md).

#include <utility>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "common.hpp"
#include "roles.hpp"

#include "stargazer/core/json.hpp"
#include "stargazer/core/log.hpp"
#include "stargazer/core/strings.hpp"
#include "stargazer/tools/mcp/servers.hpp"

#include <fmt/format.h>

#include <iostream>
#include <set>

namespace stargazer::roles {

namespace {

namespace asio = boost::asio;

constexpr std::chrono::milliseconds redis_timeout{3000};

struct listing {
  std::vector<tools::tool_listing> tools;
  std::vector<tools::mcp::catalog_entry> servers;
  std::vector<std::string> not_running;  // configured here, reported by no process
};

asio::awaitable<listing> collect(redis::connection& conn, const config& cfg) {
  if (!co_await conn.wait_connected(redis_timeout))
    throw std::runtime_error(fmt::format("cannot reach Redis within {} s", redis_timeout.count() / 1000));
  auto registry = make_tool_registry(cfg, conn);
  auto catalog = co_await tools::mcp::read_catalog(conn);
  if (!catalog) throw std::runtime_error(fmt::format("cannot read {}: {}", tools::mcp::catalog_key, catalog.error().message()));
  tools::mcp::catalog_reader reader(conn, *registry);
  co_await reader.start();
  co_await reader.stop(std::chrono::milliseconds(0));
  listing out;
  out.tools = registry->list();
  out.servers = std::move(*catalog);
  std::set<std::string> reported;
  for (const auto& s : out.servers) reported.insert(s.server);
  const auto configured = std::get<0>(tools::mcp::parse_server_configs(cfg.mcp_servers));  // validated with the config
  for (const auto& c : configured)
    if (reported.count(c.name) == 0) out.not_running.push_back(c.name);
  co_return out;
}

void print_table(const listing& l) {
  std::size_t width = 4;
  for (const auto& t : l.tools) width = std::max(width, t.name.size());
  std::cout << fmt::format("{:<{}}  {:<20}  {:<9}  {}\n", "NAME", width, "ORIGIN", "AVAILABLE", "DESCRIPTION");
  for (const auto& t : l.tools) {
    auto line = t.description.substr(0, t.description.find('\n'));
    std::cout << fmt::format("{:<{}}  {:<20}  {:<9}  {}\n", t.name, width, t.origin, t.available ? "yes" : "no",
                             utf8_prefix(t.available ? line : t.unavailable_reason, 100));
  }
  if (!l.servers.empty() || !l.not_running.empty()) std::cout << "\nMCP SERVERS\n";
  for (const auto& s : l.servers)
    std::cout << fmt::format("{}: {} ({}) on {}, {} tools\n", s.server, s.state, s.detail, s.node, s.tools.size());
  for (const auto& name : l.not_running) std::cout << fmt::format("{}: configured here, no running process reports it\n", name);
}

void print_json(const listing& l) {
  std::string out = "{\"tools\":[";
  for (std::size_t i = 0; i < l.tools.size(); ++i) {
    const auto& t = l.tools[i];
    out += fmt::format(R"({}{{"name":{},"origin":{},"available":{},"description":{})", i ? "," : "", json::quoted(t.name),
                       json::quoted(t.origin), t.available ? "true" : "false", json::quoted(t.description));
    if (!t.available) out += ",\"unavailable_reason\":" + json::quoted(t.unavailable_reason);
    out += '}';
  }
  out += "],\"servers\":[";
  bool first = true;
  for (const auto& s : l.servers) {
    out += fmt::format(R"({}{{"name":{},"state":{},"detail":{},"node":{},"tools":{}}})", first ? "" : ",",
                       json::quoted(s.server), json::quoted(s.state), json::quoted(s.detail), json::quoted(s.node),
                       s.tools.size());
    first = false;
  }
  for (const auto& name : l.not_running) {
    out += fmt::format(R"({}{{"name":{},"state":"not_running","detail":"configured here, no running process reports it","node":"","tools":0}})",
                       first ? "" : ",", json::quoted(name));
    first = false;
  }
  std::cout << out << "]}\n";
}

}  // namespace

int run_tools_list(const parsed_command& cmd) {
  return run_redis_command(cmd.cfg, "tools", redis_timeout, [&](redis::connection& conn) -> asio::awaitable<void> {
    const auto l = co_await collect(conn, cmd.cfg);
    if (cmd.tools_json) print_json(l);
    else print_table(l);
  });
}

}  // namespace stargazer::roles
