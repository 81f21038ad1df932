// The standalone role: gateway, worker and tools in one process, on one Redis connection
// and bus, with the same stream path as the distributed system. With no Redis configured
// it runs its own redis-server under the data dir; with no admin key configured it
// creates one on first start (<data dir>/admin.key) and prints it.

#include "common.hpp"
#include "embedded_redis.hpp"
#include "roles.hpp"

#include "stargazer/core/log.hpp"
#include "stargazer/platform/redis/redis_platform.hpp"
#include "stargazer/tools/remote.hpp"

#include <fmt/format.h>
#include <openssl/rand.h>

#include <filesystem>
#include <fstream>
#include <iostream>

namespace stargazer::roles {

namespace fs = std::filesystem;

namespace {

// The admin key from <data dir>/admin.key, created (0600) on first start.
struct admin_key {
  std::string key;
  std::string path;
  bool created = false;
};

admin_key load_or_create_admin_key(const std::string& data_dir) {
  admin_key k;
  k.path = (fs::absolute(data_dir) / "admin.key").string();
  if (std::ifstream in(k.path); in && std::getline(in, k.key) && !k.key.empty()) return k;
  unsigned char bytes[24];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("no randomness for the admin key");
  k.key = "sga_";
  for (auto b : bytes) k.key += fmt::format("{:02x}", b);
  fs::create_directories(data_dir);
  const auto old_mask = ::umask(077);
  std::ofstream out(k.path, std::ios::trunc);
  out << k.key << "\n";
  ::umask(old_mask);
  if (!out) throw std::runtime_error("--data-dir: cannot write " + k.path);
  k.created = true;
  return k;
}

// Prints where to go once the HTTP server listens.
class banner final : public component {
public:
  banner(const config& cfg, std::function<std::uint16_t()> port, admin_key key, std::string redis)
      : cfg_(cfg), port_(std::move(port)), key_(std::move(key)), redis_(std::move(redis)) {}
  std::string_view name() const override { return "banner"; }
  boost::asio::awaitable<void> start() override {
    const auto host = cfg_.http_host == "0.0.0.0" || cfg_.http_host == "::" ? std::string("127.0.0.1") : cfg_.http_host;
    const auto base = fmt::format("http://{}:{}", host.find(':') != std::string::npos ? "[" + host + "]" : host, port_());
    std::string text = fmt::format("\n  Stargazer is running.\n  Web chat:  {}/\n  REST API:  {}/redis-platform (docs/rest-api.md)\n", base, base);
    if (cfg_.webchat_enabled && cfg_.effective_webchat_auth() == "invite")
      text += "  Sign-in:   by invite: stargazer webchat invite --name NAME (with SG_ADMIN_API_KEY) prints a link\n";
    if (key_.created) text += fmt::format("  Admin key: {}  (created now, kept in {})\n", key_.key, key_.path);
    else if (!key_.path.empty()) text += fmt::format("  Admin key: in {}\n", key_.path);
    if (cfg_.effective_llm_provider() == "echo")
      text += "  Model:     the offline echo model answers (set SG_LLM_API_KEY for a real model)\n";
    else
      text += fmt::format("  Model:     {} at {}\n", cfg_.llm_model, cfg_.llm_base_url);
    text += fmt::format("  Redis:     {}\n", redis_);
    std::cout << text << std::endl;
    co_return;
  }
  boost::asio::awaitable<void> stop(std::chrono::milliseconds) override { co_return; }

private:
  const config& cfg_;
  std::function<std::uint16_t()> port_;
  admin_key key_;
  std::string redis_;
};

}  // namespace

int run_standalone(const config& given) {
  config cfg = given;
  std::optional<embedded_redis> own_redis;
  admin_key key;
  try {
    if (cfg.redis_url.empty() && cfg.redis_sentinels.empty()) {
      own_redis.emplace(cfg.data_dir);
      cfg.redis_url = own_redis->url();
    }
    if (cfg.admin_api_key.empty()) {
      key = load_or_create_admin_key(cfg.data_dir);
      cfg.admin_api_key = key.key;
    }
  } catch (const std::exception& e) {
    log::logger("standalone").error("{}", e.what());
    return 1;
  }
  const auto redis_description = own_redis ? "its own redis-server, data in " + own_redis->dir() : cfg.redis_url;

  int status = 0;
  {
    process p(cfg, "stargazer-standalone-" + cfg.node_id);
    p.host.add(std::make_shared<redis_component>(p.redis, p.health));
    p.host.add(std::make_shared<stream_setup_component>(p.bus, role::standalone, gateway_platforms(), p.health));
    std::unique_ptr<tools::registry> remote_registry;
    if (cfg.tools_mode == "remote") {  // the tools service runs here too
      remote_registry = make_tool_registry(cfg, p.redis);
      add_mcp_tools(p, *remote_registry, true);
      p.host.add(std::make_shared<tools::tool_service>(p.redis, p.redis_config, p.bus, *remote_registry,
                                                       cfg.node_id, tools::tool_service_settings{}, &p.metrics));
    }
    auto worker = add_worker(p);  // consumers first, then the gateway's HTTP server
    auto gateway = add_gateway(p);
    p.host.add(std::make_shared<banner>(cfg, gateway.http_port, key, redis_description));
    status = p.host.run();
  }  // every connection is closed before the private redis-server stops
  if (own_redis) own_redis->stop();
  return status;
}

}  // namespace stargazer::roles
