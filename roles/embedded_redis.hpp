#pragma once
// The standalone role's private redis-server: a child process on a unix socket under the
// data dir with AOF persistence, started before anything connects and stopped after
// everything has disconnected. The child is tied to this process's lifetime
// (PR_SET_PDEATHSIG), so a crash or kill -9 of stargazer does not leave it running; a
// socket left by an earlier crash is removed once no server answers on it.

#include <chrono>
#include <string>
#include <sys/types.h>

namespace stargazer::roles {

class embedded_redis {
public:
  // Throws std::runtime_error with a one-line, actionable message (redis-server missing,
  // data dir unusable or in use by a running instance, server not answering).
  explicit embedded_redis(const std::string& data_dir, std::chrono::milliseconds start_timeout = std::chrono::seconds(10));
  ~embedded_redis();  // stop()
  embedded_redis(const embedded_redis&) = delete;
  embedded_redis& operator=(const embedded_redis&) = delete;

  // SIGTERM (Redis flushes its AOF), then SIGKILL after `timeout`.
  void stop(std::chrono::milliseconds timeout = std::chrono::seconds(10));

  const std::string& url() const { return url_; }  // unix://<dir>/redis.sock
  const std::string& dir() const { return dir_; }
  pid_t pid() const { return pid_; }

private:
  std::string dir_;
  std::string socket_;
  std::string url_;
  pid_t pid_ = -1;
};

// True when something answers PING on the unix socket at `path`.
bool redis_answers_on(const std::string& path);

}  // namespace stargazer::roles
