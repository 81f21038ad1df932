#pragma once
// A real Redis Sentinel deployment for tests: one master redis-server, one replica and
// three redis-sentinel processes, all on free loopback ports, each sentinel with a fresh
// config file (quorum 2, down-after 1000 ms, failover-timeout 3000 ms). The constructor
// returns once the replica is linked and every sentinel passes SENTINEL CKQUORUM and knows
// the replica, so kill_master() leads to a failover in about 2-3 s.
//
// Independent of Stargazer's own Redis client: all checks go through redis-cli.

#include "redis_server.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace stargazer::test {

class sentinel_cluster {
public:
  static constexpr std::size_t sentinel_count = 3;

  // Throws std::runtime_error naming the step that did not complete within ready_timeout.
  explicit sentinel_cluster(std::string master_name = "mymaster",
                            std::chrono::milliseconds ready_timeout = std::chrono::seconds(15));
  ~sentinel_cluster();
  sentinel_cluster(const sentinel_cluster&) = delete;
  sentinel_cluster& operator=(const sentinel_cluster&) = delete;

  const std::string& master_name() const { return master_name_; }
  // Holds sentinel-<i>.conf (each sentinel runs in its own redis_server::dir()).
  const std::string& config_dir() const { return dir_.path; }
  // The ports of the processes started as master and as replica. They do not change on a
  // failover: after one, the new master is replica_port() (see wait_for_failover()).
  std::uint16_t master_port() const;
  std::uint16_t replica_port() const;
  std::vector<std::uint16_t> sentinel_ports() const;
  std::vector<std::string> sentinel_addresses() const;  // {"127.0.0.1:<port>", ...}

  redis_server& master() { return *master_; }
  redis_server& replica() { return *replica_; }
  redis_server& sentinel(std::size_t i) { return *sentinels_.at(i); }

  // SIGKILLs the master process, as a crash.
  void kill_master();
  // Polls SENTINEL GET-MASTER-ADDR-BY-NAME on every sentinel until one reports a master
  // other than master_port() and that server's ROLE is master; returns its port. Throws
  // if that does not happen within `timeout`.
  std::uint16_t wait_for_failover(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // The master port sentinel `i` currently reports, or 0 if it gives no answer.
  std::uint16_t reported_master_port(std::size_t i) const;

  // redis-cli against one process; returns trimmed output (see redis_server::cli).
  std::string master_cli(const std::vector<std::string>& args) const { return master_->cli(args); }
  std::string replica_cli(const std::vector<std::string>& args) const { return replica_->cli(args); }
  std::string sentinel_cli(std::size_t i, const std::vector<std::string>& args) const {
    return sentinels_.at(i)->cli(args);
  }
  // redis-cli against any loopback port (e.g. the port wait_for_failover() returned).
  static std::string cli(std::uint16_t port, const std::vector<std::string>& args);

private:
  struct temp_dir {
    std::string path;
    temp_dir();
    ~temp_dir();
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
  };

  void wait_ready(std::chrono::steady_clock::time_point until);

  std::string master_name_;
  // Declaration order matters: destroyed in reverse, so sentinels stop first, the temp
  // dir goes last (also when the constructor throws).
  temp_dir dir_;
  std::unique_ptr<redis_server> master_;
  std::unique_ptr<redis_server> replica_;
  std::vector<std::unique_ptr<redis_server>> sentinels_;
};

}  // namespace stargazer::test
