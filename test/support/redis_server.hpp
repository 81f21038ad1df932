#pragma once
// A real redis-server for tests: started on a free port and a unix socket in a fresh
// temporary directory, persistence off unless asked, PING-checked before use, and
// always stopped by its pid.

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <sys/types.h>

namespace stargazer::test {

std::uint16_t free_port();

// Runs redis-cli against 127.0.0.1:<port> and returns its trimmed output.
std::string redis_cli(std::uint16_t port, const std::vector<std::string>& args);

struct redis_server_options {
  bool appendonly = false;
  std::vector<std::string> extra_args;  // e.g. {"--requirepass", "secret"}
  std::string executable = "redis-server";
  // If set, passed as the first argument, before the options: redis-sentinel requires a
  // config file on disk (give an absolute path; the server runs in its own dir()).
  std::string config_file;
};

class redis_server {
public:
  explicit redis_server(redis_server_options options = {});
  ~redis_server();
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;

  std::uint16_t port() const { return port_; }
  const std::string& unix_path() const { return unix_path_; }
  const std::string& dir() const { return dir_; }
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  std::string url() const;       // redis://127.0.0.1:<port>
  std::string unix_url() const;  // unix://<dir>/redis.sock

  // SIGTERM, then SIGKILL after `grace`; waits for the process.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(5));
  // SIGKILL, as a crash.
  void kill();
  // Starts again on the same port, socket and directory.
  void start();

  // Runs redis-cli against this server and returns its trimmed output (for assertions
  // independent of Stargazer's own client).
  std::string cli(const std::vector<std::string>& args) const;

private:
  void wait_ready(std::chrono::milliseconds timeout);

  redis_server_options options_;
  std::string dir_;
  std::string unix_path_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace stargazer::test
