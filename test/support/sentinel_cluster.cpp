#include "sentinel_cluster.hpp"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

namespace stargazer::test {
namespace {

using namespace std::chrono_literals;

constexpr auto poll_interval = 50ms;

std::string last_line(const std::string& text) {
  const auto pos = text.rfind('\n');
  return pos == std::string::npos ? text : text.substr(pos + 1);
}

std::uint16_t parse_port(const std::string& text) {
  if (text.empty() || text.size() > 5) return 0;
  unsigned value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return 0;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  return value <= 65535 ? static_cast<std::uint16_t>(value) : 0;
}

long ms_of(std::chrono::milliseconds d) { return static_cast<long>(d.count()); }

}  // namespace

sentinel_cluster::temp_dir::temp_dir() {
  std::string templ = (std::filesystem::temp_directory_path() / "sg-sentinel-XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) throw std::runtime_error("sentinel_cluster: mkdtemp failed");
  path = templ;
}

sentinel_cluster::temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

sentinel_cluster::sentinel_cluster(std::string master_name, std::chrono::milliseconds ready_timeout)
    : master_name_(std::move(master_name)) {
  const auto until = std::chrono::steady_clock::now() + ready_timeout;

  // Without repl-diskless-sync-delay 0, Redis 7.0 waits 5 s before syncing the replica.
  redis_server_options master_options;
  master_options.extra_args = {"--repl-diskless-sync-delay", "0"};
  master_ = std::make_unique<redis_server>(master_options);

  redis_server_options replica_options;
  replica_options.extra_args = {"--replicaof", "127.0.0.1", std::to_string(master_->port()),
                                "--repl-diskless-sync-delay", "0"};
  replica_ = std::make_unique<redis_server>(replica_options);

  // The sentinels must see the replica in their first INFO of the master, or they only
  // find it at the next 10 s INFO poll: wait for the link before starting them.
  std::string info;
  for (;;) {
    info = master_->cli({"INFO", "replication"});
    const std::string replica_info = replica_->cli({"INFO", "replication"});
    if (info.find("connected_slaves:1") != std::string::npos &&
        replica_info.find("master_link_status:up") != std::string::npos)
      break;
    if (std::chrono::steady_clock::now() >= until)
      throw std::runtime_error("sentinel_cluster: the replica on port " + std::to_string(replica_->port()) +
                               " did not link to the master on port " + std::to_string(master_->port()) +
                               " within " + std::to_string(ms_of(ready_timeout)) + " ms; master INFO:\n" +
                               info + "\nreplica INFO:\n" + replica_info);
    std::this_thread::sleep_for(poll_interval);
  }

  for (std::size_t i = 0; i < sentinel_count; ++i) {
    // A fresh file per sentinel and per run: sentinels rewrite it with their state.
    const std::string conf = dir_.path + "/sentinel-" + std::to_string(i) + ".conf";
    {
      std::ofstream out(conf, std::ios::trunc);
      out << "sentinel monitor " << master_name_ << " 127.0.0.1 " << master_->port() << " 2\n"
          << "sentinel down-after-milliseconds " << master_name_ << " 1000\n"
          << "sentinel failover-timeout " << master_name_ << " 3000\n";
      if (!out) throw std::runtime_error("sentinel_cluster: cannot write " + conf);
    }
    redis_server_options options;
    options.executable = "redis-sentinel";
    options.config_file = conf;
    sentinels_.push_back(std::make_unique<redis_server>(options));
  }

  wait_ready(until);
}

void sentinel_cluster::wait_ready(std::chrono::steady_clock::time_point until) {
  const std::string replica_name = "127.0.0.1:" + std::to_string(replica_->port());
  for (std::size_t i = 0; i < sentinels_.size(); ++i) {
    for (;;) {
      const std::string quorum = sentinels_[i]->cli({"SENTINEL", "CKQUORUM", master_name_});
      const std::string replicas = sentinels_[i]->cli({"SENTINEL", "REPLICAS", master_name_});
      // All three must know each other ("OK 3"), not just a quorum: failovers are then dependable.
      const bool quorum_ok = quorum.rfind("OK 3", 0) == 0;
      const bool knows_replica = replicas.find(replica_name) != std::string::npos;
      if (quorum_ok && knows_replica) break;
      if (std::chrono::steady_clock::now() >= until) {
        std::string message = "sentinel_cluster: sentinel 127.0.0.1:" + std::to_string(sentinels_[i]->port()) +
                              " (master '" + master_name_ + "' on port " + std::to_string(master_->port()) +
                              ") was not ready in time: ";
        if (!quorum_ok) message += "SENTINEL CKQUORUM answered '" + quorum + "'";
        else message += "it does not know the replica " + replica_name + " yet";
        throw std::runtime_error(message);
      }
      std::this_thread::sleep_for(poll_interval);
    }
  }
}

sentinel_cluster::~sentinel_cluster() {
  // Sentinels first, so they do not react to the servers going away.
  for (auto& s : sentinels_) s->stop(std::chrono::seconds(2));
  sentinels_.clear();
  replica_.reset();
  master_.reset();
}

std::uint16_t sentinel_cluster::master_port() const { return master_->port(); }
std::uint16_t sentinel_cluster::replica_port() const { return replica_->port(); }

std::vector<std::uint16_t> sentinel_cluster::sentinel_ports() const {
  std::vector<std::uint16_t> ports;
  for (const auto& s : sentinels_) ports.push_back(s->port());
  return ports;
}

std::vector<std::string> sentinel_cluster::sentinel_addresses() const {
  std::vector<std::string> addresses;
  for (const auto& s : sentinels_) addresses.push_back("127.0.0.1:" + std::to_string(s->port()));
  return addresses;
}

std::string sentinel_cluster::cli(std::uint16_t port, const std::vector<std::string>& args) {
  return redis_cli(port, args);
}

void sentinel_cluster::kill_master() { master_->kill(); }

std::uint16_t sentinel_cluster::reported_master_port(std::size_t i) const {
  if (!sentinels_.at(i)->running()) return 0;
  // redis-cli prints the two-element array as "127.0.0.1\n<port>".
  return parse_port(last_line(sentinels_[i]->cli({"SENTINEL", "GET-MASTER-ADDR-BY-NAME", master_name_})));
}

std::uint16_t sentinel_cluster::wait_for_failover(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  const std::uint16_t old_port = master_->port();
  std::vector<std::uint16_t> last(sentinels_.size(), 0);
  for (;;) {
    for (std::size_t i = 0; i < sentinels_.size(); ++i) {
      last[i] = reported_master_port(i);
      if (last[i] == 0 || last[i] == old_port) continue;
      // The promoted replica is switched to master before +switch-master; check anyway.
      const std::string role = cli(last[i], {"ROLE"});
      if (role.rfind("master", 0) == 0) return last[i];
    }
    if (std::chrono::steady_clock::now() >= until) {
      std::string seen;
      for (std::size_t i = 0; i < last.size(); ++i)
        seen += (i ? ", " : "") + std::to_string(sentinels_[i]->port()) + " -> " + std::to_string(last[i]);
      throw std::runtime_error("sentinel_cluster: no failover away from master port " + std::to_string(old_port) +
                               " within " + std::to_string(ms_of(timeout)) +
                               " ms (sentinel port -> reported master port: " + seen + ")");
    }
    std::this_thread::sleep_for(poll_interval);
  }
}

}  // namespace stargazer::test
